"""Eligible opportunities: each imp's candidate campaign ids ride on the answer (not on the
auction event) to the pacing link, which counts them, a late answer's too."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import numpy as np
from bidder_world import banner_request, make_world

from bidder.outcome import make_late
from bidder.pacing_link import PacingLink
from fleet.config import Campaign
from fleet.events import AuctionEvent, decode, encode


class Floor:
    loaded = True

    def allow(self, campaign: Campaign, price_cpm_micros: int, now: float) -> bool:
        return True


def two_imps() -> dict[str, Any]:
    req = banner_request()
    req["imp"].append({"id": "2", "banner": {"w": 300, "h": 250}, "bidfloor": 0.1})
    return req


def test_the_answer_carries_each_imps_candidate_campaign_ids() -> None:
    world = make_world()
    answer = world.handle(two_imps())
    assert answer.outcome == "bid" and len(answer.opportunities) == 2
    for ids in answer.opportunities:
        assert ids.dtype == np.int64 and len(np.unique(ids)) == len(ids)
    assert sum(len(ids) for ids in answer.opportunities) == answer.candidates
    assert {b.campaign_id for b in answer.bids} <= set(
        np.concatenate(answer.opportunities).tolist()
    )
    nobid = world.handle(banner_request(468, 60))  # no campaign matches
    assert nobid.reason == "no_candidates"
    assert [len(ids) for ids in nobid.opportunities] == [0]


def test_the_opportunities_of_a_late_answer_are_counted() -> None:
    world = make_world()
    answer = world.handle(two_imps())
    expected: dict[int, int] = {}
    for ids in answer.opportunities:
        for cid in ids.tolist():
            expected[cid] = expected.get(cid, 0) + 1
    assert expected and max(expected.values()) == 2  # the same campaigns in both imps
    make_late(answer)
    assert answer.outcome == "late" and answer.bids == []
    link = PacingLink("bidder-0", Floor(), rng=random.Random(1))
    assert link.sent(answer, 1.0) == 0  # no bid reserved
    assert link.gate.report(1.0).opportunities == expected


def test_an_auction_event_with_the_old_opportunity_columns_still_decodes() -> None:
    event = AuctionEvent(txid="r:1:b", ts=1.0, bidder_id="b", exchange="x", imps=1, outcome="bid")
    old = msgspec.msgpack.decode(encode(event))
    old.update(opportunity_campaigns=[1, 7], opportunity_counts=[3, 1])
    assert decode(msgspec.msgpack.encode(old)) == event
