from __future__ import annotations

import msgspec
import pytest

from fleet import events as ev


def _bid(txid: str) -> ev.BidEvent:
    return ev.BidEvent(
        txid=txid,
        ts=1.5,
        imp_id="1",
        campaign_id=3,
        creative_id=9,
        bid_cpm_micros=2_000_000,
        floor_cpm_micros=500_000,
        value_cpm_micros=2_500_000,
        p_click=0.01,
        p_install=0.02,
        auction_type=1,
        features=["os=ios", "country=USA"],
    )


def test_every_event_type_round_trips() -> None:
    samples: list[ev.AnyEvent] = [
        ev.AuctionEvent(txid="t", ts=1.0, bidder_id="b", exchange="x", imps=1, outcome="bid"),
        _bid("t"),
        ev.WinEvent(
            txid="t", ts=2.0, campaign_id=3, creative_id=9, bid_cpm_micros=2, clear_cpm_micros=1
        ),
        ev.LossEvent(txid="t", ts=2.0, campaign_id=3, creative_id=9, bid_cpm_micros=2),
        ev.BillingEvent(
            txid="t", ts=3.0, campaign_id=3, creative_id=9, clear_cpm_micros=1000, cost_micros=1
        ),
        ev.ImpressionEvent(txid="t", ts=3.0, campaign_id=3, creative_id=9),
        ev.ClickEvent(txid="t", ts=4.0, campaign_id=3, creative_id=9),
        ev.InstallEvent(txid="t", ts=5.0, campaign_id=3, creative_id=9, partner="mmp"),
        ev.InAppEvent(
            txid="t",
            ts=6.0,
            campaign_id=3,
            creative_id=9,
            name="purchase",
            revenue_micros=4_990_000,
        ),
    ]
    assert sorted(ev.event_type(e) for e in samples) == sorted(ev.EVENT_TYPES)
    for e in samples:
        assert ev.decode(ev.encode(e)) == e


def test_decode_rejects_garbage() -> None:
    with pytest.raises(msgspec.DecodeError):
        ev.decode(b"\x93not an event")


def test_partition_is_stable_and_fixed_width() -> None:
    # The same transaction id lands in the same partition in every process (no hash()).
    assert ev.partition_of("req-1:imp-1:b0", 64) == ev.partition_of("req-1:imp-1:b0", 64)
    topic = ev.topic_for(_bid("req-1:imp-1:b0"))
    assert topic.startswith("ev.") and topic.endswith(".bid")
    assert len(topic.split(".")[1]) == ev.PARTITION_WIDTH
    assert ev.partition_prefix(1) == "ev.0001."
    assert not ev.partition_prefix(10).startswith(ev.partition_prefix(1))


def test_partitions_spread_transactions_evenly() -> None:
    counts = [0] * 16
    for i in range(16_000):
        counts[ev.partition_of(f"tx-{i}", 16)] += 1
    assert min(counts) > 800 and max(counts) < 1200
