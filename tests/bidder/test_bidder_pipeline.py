"""The pipeline as a whole: events, market feedback, defects never becoming 5xx."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest
from bidder_world import KEY, NOON, Frequency, Gate, banner_request, load_snapshot, make_world

from bidder.creative import NoPerformance
from bidder.options import TmaxBounds
from bidder.pipeline import Pipeline, PipelineSettings
from bidder.pricing import LogNormalMarket
from bidder.scoring import HashedLinearModel, PriorModel
from fleet.events import AuctionEvent, BidEvent, decode, encode
from fleet.signing import user_key


def test_not_ready_before_a_snapshot() -> None:
    p = Pipeline(
        PipelineSettings(signing_key=KEY),
        gate=Gate(),
        frequency=Frequency(),
        model=PriorModel(),
        market=LogNormalMarket(),
        performance=NoPerformance(),
        rng=random.Random(1),
    )
    assert not p.ready
    a = p.handle(
        json.dumps(banner_request()).encode(), arrival=0.0, clock=lambda: 0.0, wallclock=NOON
    )
    assert (a.status, a.reason, a.nbr) == (204, "not_ready", 1)
    p.set_snapshot(load_snapshot())
    assert p.ready


@pytest.mark.parametrize(
    "bad",
    [
        dict(signing_key=b"short"),
        dict(margin=1.0),
        dict(tmax=TmaxBounds(cap_ms=0)),
        dict(currency="usd"),
    ],
)
def test_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PipelineSettings(**{"signing_key": KEY, **bad}).validate()


def test_events_describe_the_auction_and_each_bid() -> None:
    world = make_world()
    answer = world.handle(banner_request())
    auction, bid = answer.events
    assert isinstance(auction, AuctionEvent) and isinstance(bid, BidEvent)
    assert auction.outcome == "bid" and auction.imps == 1 and auction.exchange == "testx"
    assert auction.candidates == answer.candidates == 2
    assert auction.country == "USA" and auction.site_domain == "news.example.com"
    assert auction.txid == bid.txid == "req-1:1:bidder-0"  # one partition for the transaction
    assert bid.bid_cpm_micros == answer.bids[0].price_cpm_micros
    assert bid.floor_cpm_micros == 100_000 and bid.value_cpm_micros > bid.bid_cpm_micros
    assert "campaign=" + str(bid.campaign_id) in bid.features and "country=USA" in bid.features
    for event in answer.events:
        assert decode(encode(event)) == event
    nobid = world.handle(banner_request(468, 60)).events
    assert [type(e) for e in nobid] == [AuctionEvent]
    assert nobid[0].outcome == "nobid" and nobid[0].reason == "no_candidates"  # type: ignore[union-attr]


def test_pacing_gate_sees_campaign_currency_prices_and_wallclock() -> None:
    world = make_world()
    world.handle(banner_request(970, 250, country="DEU", regs={"gdpr": 1}))
    ((campaign_id, price, now),) = world.gate.calls
    assert campaign_id == 8 and now == NOON
    assert price == 2_608_695 * 920_000 // 1_000_000  # USD bid back in EUR


def test_frequency_reads_use_the_most_stable_user_key() -> None:
    world = make_world()
    req = banner_request(160, 600, user={"id": "exchange-user", "buyeruid": "ours-1"})
    req["device"]["ifa"] = "AAAAAAAA-1111-2222-3333-444444444444"
    world.handle(req)  # the advertising id first: what a postback carries too
    req["device"]["lmt"] = 1
    world.handle(req)  # limited: our synced id
    req["user"] = {"id": "exchange-user"}
    world.handle(req)
    req["device"]["ifa"] = "00000000-0000-0000-0000-000000000000"
    req["device"]["lmt"] = 0
    world.handle(req)
    # keyed hashes of those ids under the signing key (no user key secret of its own): the
    # keys the tracker counts impressions under, never the raw ids
    assert world.frequency.keys == [
        user_key("aaaaaaaa-1111-2222-3333-444444444444", KEY),
        user_key("b:ours-1", KEY),
        user_key("u:testx:exchange-user", KEY),
        user_key("u:testx:exchange-user", KEY),
    ]
    other = make_world(user_key_secret=b"a user key secret of its own")
    other.handle(req)
    assert other.frequency.keys == [
        user_key("u:testx:exchange-user", b"a user key secret of its own")
    ]


def test_wins_and_losses_teach_the_market_model() -> None:
    world = make_world()
    answer = world.handle(banner_request())
    (bid,) = answer.bids
    before = world.market.params("2|testx|USA|300x250")
    assert world.pipeline.observe(bid.txid, won=True, price_cpm_micros=400_000)
    assert not world.pipeline.observe(bid.txid, won=True)  # each bid once
    assert not world.pipeline.observe("unknown", won=False)
    after = world.market.params("2|testx|USA|300x250")
    assert after[0] < before[0]  # cleared far below the prior median
    second = world.handle(dict(banner_request(), id="req-2")).bids[0]
    assert world.pipeline.observe(second.txid, won=False)


def test_a_learnt_model_can_be_swapped_in() -> None:
    world = make_world()
    model = HashedLinearModel.zeros(bits=10, version=5)  # p = 0.5: CPC and CPI values jump
    world.pipeline.set_model(model)
    answer = world.handle(banner_request())
    assert answer.events[1].model_version == 5  # type: ignore[union-attr]


class Exploding:
    version = 0

    def predict(self, features: list[str]) -> tuple[float, float]:
        raise RuntimeError("model bug")


def test_a_defect_becomes_a_technical_no_bid_not_a_5xx(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(model=Exploding())
    answer = world.handle(banner_request())
    assert (answer.status, answer.outcome, answer.reason, answer.nbr) == (
        204,
        "nobid",
        "internal",
        1,
    )
    assert "internal error" in caplog.text
    caplog.clear()
    world.handle(banner_request())
    assert "internal error" not in caplog.text  # logged at most every 10 s


def test_bid_response_is_valid_openrtb_json() -> None:
    world = make_world()
    doc = json.loads(world.handle(banner_request()).body)
    assert set(doc) == {"id", "seatbid", "bidid", "cur"}
    (seat,) = doc["seatbid"]
    assert seat["seat"] == "seat-7"
    (bid,) = seat["bid"]
    assert {
        "id",
        "impid",
        "price",
        "adm",
        "nurl",
        "burl",
        "lurl",
        "adomain",
        "crid",
        "cid",
        "w",
        "h",
    } <= set(bid)
    assert isinstance(bid["price"], float)
    assert msgspec.json.decode(world.handle(banner_request()).body)["id"] == "req-1"


@pytest.mark.parametrize(
    ("tmax", "expires_ms"),
    [(None, 100), (120, 120), ("80", 80), (0, 100), (-5, 100), ("5000", 250), (10**12, 250)],
)
def test_the_answer_carries_its_deadlines(tmax: object, expires_ms: int) -> None:
    """The deadlines the endpoint keeps come with the answer: tmax (default 100, cap 250 ms)
    for any answer, 15 ms before it for a bid."""
    world = make_world()
    req = banner_request()
    if tmax is None:
        del req["tmax"]
    else:
        req["tmax"] = tmax
    answer = world.handle(req)
    assert answer.status == 200 and answer.bids
    arrival = world.clock.now
    assert answer.expires == pytest.approx(arrival + expires_ms / 1000)
    assert answer.deadline == pytest.approx(arrival + (expires_ms - 15) / 1000)
    crawler = world.handle({**req, "device": {**req["device"], "ua": "Googlebot/2.1"}})
    assert crawler.status == 204 and crawler.expires == answer.expires


def test_a_body_nested_too_deep_is_a_400_not_an_internal_error() -> None:
    world = make_world()
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"id": "r", "imp": [{"id": "1"}], "ext": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"id": "r", "imp": [{"id": "1"}], "site": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        answer = world.handle(body)
        assert (answer.status, answer.outcome) == (400, "invalid"), answer.reason
        assert json.loads(answer.body) == {"error": "malformed JSON: nested too deeply"}


def test_a_bid_on_a_capped_campaign_counts_against_the_users_cap_at_once() -> None:
    """The tracker counts an impression only once it arrives: the pipeline tells the frequency
    reader of each bid that goes out on a capped campaign, and of no other."""
    world = make_world()
    req = banner_request(160, 600, user={"buyeruid": "ours-1"})
    answer = world.handle(req)
    assert [b.campaign_id for b in answer.bids] == [6]  # the fixture's capped campaign
    assert world.frequency.bids == [(user_key("b:ours-1", KEY), 6, (86_400,))]
    world.handle(banner_request(300, 250, user={"buyeruid": "ours-1"}))  # an uncapped winner
    assert len(world.frequency.bids) == 1
    late = world.handle(req, spent_ms=10_000.0)  # an answer that never goes out counts nothing
    assert late.outcome == "late" and len(world.frequency.bids) == 1
