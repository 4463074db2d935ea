"""The stream join: labels within the window, negatives when it closes, late and duplicate
events counted, memory bounded, market observations from wins and losses."""

from __future__ import annotations

import pytest

from fleet.events import (
    BidEvent,
    ClickEvent,
    ImpressionEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
)
from learner.errors import BadParameters
from learner.join import Example, Joiner, JoinSettings, kept_fraction, market_segment_of

FEATURES = ["country=US", "os=ios", "exchange=ex1", "fmt=banner", "size=320x50", "campaign=1"]


def bid(txid: str, ts: float, *, at: int = 2, price: int = 2_000_000) -> BidEvent:
    return BidEvent(
        txid=txid,
        ts=ts,
        imp_id="1",
        campaign_id=1,
        creative_id=2,
        bid_cpm_micros=price,
        floor_cpm_micros=0,
        value_cpm_micros=3_000_000,
        p_click=0.01,
        p_install=0.1,
        auction_type=at,
        features=FEATURES,
    )


def imp(txid: str, ts: float) -> ImpressionEvent:
    return ImpressionEvent(txid=txid, ts=ts, campaign_id=1, creative_id=2)


def click(txid: str, ts: float) -> ClickEvent:
    return ClickEvent(txid=txid, ts=ts, campaign_id=1, creative_id=2)


def install(txid: str, ts: float) -> InstallEvent:
    return InstallEvent(txid=txid, ts=ts, campaign_id=1, creative_id=2)


def run(j: Joiner, events: list) -> list[Example]:  # type: ignore[type-arg]
    out: list[Example] = []
    for e in events:
        out.extend(j.feed(e)[0])
    return out


def test_click_within_window_is_positive_and_starts_an_install_example() -> None:
    j = Joiner(JoinSettings(click_window_s=100, install_window_s=1000))
    out = run(j, [bid("a", 0), imp("a", 1), click("a", 31)])
    assert out == []  # learnt when the window closes, not when the label comes
    out = j.flush(101)
    assert [(e.head, e.label, e.label_delay) for e in out] == [("click", 1.0, 30.0)]
    assert out[0].features == FEATURES
    out = run(j, [install("a", 500)])
    assert out == []
    out = j.flush(1031)
    assert [(e.head, e.label, e.ts, e.label_delay) for e in out] == [("install", 1.0, 31.0, 469.0)]


def test_positives_wait_for_their_window_like_negatives() -> None:
    """A stream cut anywhere holds positives and negatives in the true ratio: the last window's
    clicks are not learnt ahead of the impressions that will close as negatives."""
    j = Joiner(JoinSettings(click_window_s=100))
    events = []
    for i in range(100):
        events += [bid(str(i), i), imp(str(i), i)]
        if i % 10 == 0:
            events.append(click(str(i), i + 1))
    out = run(j, events)
    settled = [e for e in out if e.head == "click"]
    assert settled == []  # the watermark (99) closed no window yet
    out = [e for e in j.flush(150) if e.head == "click"]  # windows of impressions 0..50 closed
    assert len(out) == 51 and sum(e.label for e in out) == 6


def test_window_closes_into_a_negative_and_late_click_is_counted() -> None:
    j = Joiner(JoinSettings(click_window_s=100, install_window_s=1000, bid_ttl_s=50))
    run(j, [bid("a", 0), imp("a", 1)])
    assert j.waiting == 1
    out = run(j, [bid("b", 100)])  # watermark 100: not yet (1 + 100 > 100)
    assert out == []
    out = run(j, [bid("c", 101)])
    assert [(e.txid, e.head, e.label) for e in out] == [("a", "click", 0.0)]
    assert run(j, [click("a", 102)]) == []
    assert j.stats.late_labels == 1
    assert j.waiting == 0


def test_flush_closes_windows_on_an_idle_stream_and_drain_settles_everything() -> None:
    j = Joiner(JoinSettings(click_window_s=100))
    run(j, [bid("a", 0), imp("a", 0), bid("b", 50), imp("b", 50)])
    assert [e.txid for e in j.flush(120)] == ["a"]
    assert [e.txid for e in j.drain()] == ["b"]
    assert j.waiting == 0 and j.bids_waiting == 0


def test_install_window_and_no_install_gives_negative() -> None:
    j = Joiner(JoinSettings(click_window_s=10, install_window_s=100))
    out = run(j, [bid("a", 0), imp("a", 0), click("a", 5)])
    assert out == []
    assert [(e.head, e.label) for e in j.flush(10)] == [("click", 1.0)]
    out = j.flush(104)
    assert out == []
    out = j.flush(105)
    assert [(e.head, e.label) for e in out] == [("install", 0.0)]


def test_click_before_its_impression_and_duplicates() -> None:
    j = Joiner()
    out = run(j, [bid("a", 0), click("a", 2), imp("a", 3), click("a", 4)])
    assert j.stats.duplicates == 2
    out = run(j, [install("a", 10), install("a", 11)])
    assert j.stats.duplicates == 3
    out = j.drain()
    assert sorted((e.head, e.label) for e in out) == [("click", 1.0), ("install", 1.0)]


def test_unknown_txids_are_counted_not_learnt() -> None:
    j = Joiner()
    assert run(j, [imp("x", 0), click("y", 0), install("z", 0)]) == []
    assert j.stats.unjoined == 1 and j.stats.late_labels == 2


def test_waiting_examples_are_bounded() -> None:
    j = Joiner(JoinSettings(max_waiting=3, max_bids=5))
    out = run(j, [e for i in range(10) for e in (bid(str(i), i), imp(str(i), i))])
    assert j.waiting <= 3 and j.bids_waiting <= 5
    assert [e.txid for e in out] == ["0", "1", "2", "3", "4", "5", "6"]
    assert all(e.label == 0.0 for e in out)
    assert j.stats.evicted >= 7


def test_negative_subsampling_is_stable_and_weighted() -> None:
    j = Joiner(JoinSettings(click_window_s=1, negative_rate=0.25))
    events = [e for i in range(4000) for e in (bid(f"t{i}", i), imp(f"t{i}", i))]
    out = run(j, events) + j.drain()
    assert all(e.weight == 4.0 for e in out)
    assert 850 < len(out) < 1150
    assert {e.txid for e in out} == {f"t{i}" for i in range(4000) if kept_fraction(f"t{i}") < 0.25}
    assert j.stats.dropped_negatives == 4000 - len(out)


def test_prices_from_wins_and_losses() -> None:
    j = Joiner()
    seg = "2|ex1|US|320x50"
    assert market_segment_of(bid("a", 0)) == seg
    cases = [
        (
            [
                bid("a", 0),
                WinEvent(
                    txid="a",
                    ts=1,
                    campaign_id=1,
                    creative_id=2,
                    bid_cpm_micros=2_000_000,
                    clear_cpm_micros=1_500_000,
                ),
            ],
            [(seg, "exact", 1_500_000)],
        ),
        (
            [
                bid("b", 0, at=1),
                WinEvent(
                    txid="b",
                    ts=1,
                    campaign_id=1,
                    creative_id=2,
                    bid_cpm_micros=2_000_000,
                    clear_cpm_micros=2_000_000,
                ),
            ],
            [("1|ex1|US|320x50", "below", 2_000_000)],
        ),
        (
            [
                bid("c", 0),
                LossEvent(txid="c", ts=1, campaign_id=1, creative_id=2, bid_cpm_micros=2_000_000),
            ],
            [(seg, "above", 2_000_000)],
        ),
        (
            [
                bid("d", 0),
                LossEvent(
                    txid="d",
                    ts=1,
                    campaign_id=1,
                    creative_id=2,
                    bid_cpm_micros=2_000_000,
                    clear_cpm_micros=2_500_000,
                ),
            ],
            [(seg, "exact", 2_500_000)],
        ),
    ]
    for events, want in cases:
        got = []
        for e in events:
            got.extend((p.segment, p.kind, p.price_micros) for p in j.feed(e)[1])
        assert got == want
    # a repeated win notice is not a second observation; a loss for an unknown bid is counted
    assert (
        j.feed(
            WinEvent(
                txid="a", ts=2, campaign_id=1, creative_id=2, bid_cpm_micros=1, clear_cpm_micros=1
            )
        )[1]
        == []
    )
    assert (
        j.feed(LossEvent(txid="zz", ts=2, campaign_id=1, creative_id=2, bid_cpm_micros=1))[1] == []
    )
    assert j.stats.unjoined == 1 and j.stats.prices == 4


def test_segment_formats() -> None:
    video = BidEvent(
        txid="v",
        ts=0,
        imp_id="1",
        campaign_id=1,
        creative_id=2,
        bid_cpm_micros=1,
        floor_cpm_micros=0,
        value_cpm_micros=1,
        p_click=0,
        p_install=0,
        auction_type=1,
        features=["exchange=e", "country=DE", "fmt=video"],
    )
    assert market_segment_of(video) == "1|e|DE|video"
    bare = BidEvent(
        txid="v",
        ts=0,
        imp_id="1",
        campaign_id=1,
        creative_id=2,
        bid_cpm_micros=1,
        floor_cpm_micros=0,
        value_cpm_micros=1,
        p_click=0,
        p_install=0,
        auction_type=2,
    )
    assert market_segment_of(bare) == "2|||other"


def test_bad_settings() -> None:
    with pytest.raises(BadParameters):
        JoinSettings(click_window_s=0)
    with pytest.raises(BadParameters):
        JoinSettings(negative_rate=0)
