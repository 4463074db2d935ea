"""Undecodable requests: each its own txid, spread over the event bus partitions."""

from __future__ import annotations

import random

from bidder_world import make_world

from bidder.anonymous import AnonymousTxids
from fleet.events import AuctionEvent, partition_of

PARTITIONS = 64


def test_each_undecodable_request_gets_its_own_txid_spread_over_partitions() -> None:
    world = make_world()
    txids = []
    for _ in range(640):
        answer = world.handle(b"{not json")
        assert answer.status == 400
        (event,) = answer.events
        assert isinstance(event, AuctionEvent) and event.outcome == "invalid"
        txids.append(event.txid)
    assert len(set(txids)) == len(txids)
    assert all(t.startswith(":") and t.endswith(":bidder-0") for t in txids)
    spread = {partition_of(t, PARTITIONS) for t in txids}
    # 640 uniform draws over 64 partitions leave one empty with odds of about 3 in 1000;
    # the single txid of before ("::bidder-0") filled exactly one.
    assert len(spread) >= 56


def test_run_tags_differ_between_processes_and_counters_do_not_repeat() -> None:
    first = AnonymousTxids("b", random.Random(1))
    second = AnonymousTxids("b", random.Random(2))
    a = [first.next() for _ in range(1000)]
    b = [second.next() for _ in range(1000)]
    assert len(set(a)) == 1000 and not set(a) & set(b)
    assert a[0] == AnonymousTxids("b", random.Random(1)).next()  # the tag comes from the rng
