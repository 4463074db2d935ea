"""The pure core: aggregates, the bid join, positions and losses, from plain data."""

from __future__ import annotations

from collections import defaultdict

import msgspec
import pytest
from bidlogger_world import expected, world

from bidlogger.aggregate import Aggregator, BidJoin, decode_batch, encode_batch
from bidlogger.positions import Position, Positions
from bidlogger.raw import rows_of
from fleet.events import (
    EVENT_TYPES,
    AnyEvent,
    AuctionEvent,
    BidEvent,
    ImpressionEvent,
    encode,
    event_type,
    partition_of,
    topic_for,
)

TOTAL = 64


def aggregator(
    partitions: int = TOTAL, raw: frozenset[int] = frozenset(), **kw: object
) -> Aggregator:
    return Aggregator(
        logger_id="t",
        shard=f"0-{partitions - 1}/{TOTAL}",
        partitions_covered=partitions,
        partitions_total=TOTAL,
        join=BidJoin(3600, 1_000_000),
        raw_partitions=raw,
        raw_types=frozenset({"bid", "impression", "click", "billing"}),
        **kw,  # type: ignore[arg-type]
    )


def feed(agg: Aggregator, events: list[AnyEvent]) -> None:
    """Per topic, in batches of up to 50, as a subscriber delivers them."""
    by_topic: dict[str, list[bytes]] = defaultdict(list)
    for e in events:
        by_topic[topic_for(e, TOTAL)].append(encode(e))
    for topic, payloads in by_topic.items():
        partition = int(topic.split(".")[1])
        for i in range(0, len(payloads), 50):
            agg.add(topic, partition, topic.rsplit(".", 1)[1], payloads[i : i + 50])


def totals(agg_rows: list) -> dict:
    out: dict = defaultdict(lambda: [0, 0, 0, 0])
    for r in agg_rows:
        cell = out[(r.minute, r.campaign_id, r.creative_id, r.event_type)]
        cell[0] += r.events
        cell[1] += r.spend_micros
        cell[2] += r.p_click_e9
        cell[3] += r.joined
    return out


def test_aggregates_equal_the_events_exactly_across_flushes() -> None:
    txs = world(400)
    bids = [e for tx in txs for e in tx if event_type(e) in ("auction", "bid")]
    later = [e for tx in txs for e in tx if event_type(e) not in ("auction", "bid")]
    agg = aggregator()
    feed(agg, bids)
    first = agg.flush(1)
    feed(agg, later)
    second = agg.flush(2)
    got = totals(first.rows + second.rows)
    exp = expected(txs)
    assert {k: v[0] for k, v in got.items()} == dict(exp.events)
    assert {k: v[1] for k, v in got.items() if v[1]} == {k: v for k, v in exp.spend.items() if v}
    assert {k: v[2] for k, v in got.items() if v[3]} == dict(exp.p_click_e9)
    assert {k: v[3] for k, v in got.items() if v[3]} == dict(exp.joined)
    assert first.events + second.events == sum(len(tx) for tx in txs)
    assert agg.dropped == {}


def test_impression_without_its_bid_counts_but_does_not_join() -> None:
    agg = aggregator()
    imp = ImpressionEvent(txid="a:1:b", ts=1_796_000_000.0, campaign_id=1, creative_id=11)
    feed(agg, [imp])
    (row,) = agg.flush(1).rows
    assert (row.event_type, row.events, row.joined, row.p_click_e9) == ("impression", 1, 0, 0)


def test_bad_payloads_timestamps_and_partitions_are_dropped_by_cause() -> None:
    agg = aggregator()
    good = AuctionEvent(
        txid="x:1:b", ts=1_796_000_000.0, bidder_id="b", exchange="e", imps=1, outcome="bid"
    )
    partition = partition_of(good.txid, TOTAL)
    bad_ts = msgspec.structs.replace(good, ts=float("nan"))
    agg.add("ev.x.auction", partition, "auction", [encode(good), b"\x01junk", encode(bad_ts)])
    agg.add("ev.x.auction", (partition + 1) % TOTAL, "auction", [encode(good)])
    agg.add("ev.x.nope", partition, "nope", [encode(good)])
    assert agg.dropped == {
        "undecodable": 1,
        "bad_timestamp": 1,
        "wrong_partition": 1,
        "unknown_topic": 1,
    }
    assert agg.flush(1).events == 1


def test_raw_sample_keeps_configured_partitions_and_types_whole() -> None:
    txs = world(200)
    events = [e for tx in txs for e in tx]
    raw_parts = frozenset(range(0, 64, 4))
    agg = aggregator(raw=raw_parts)
    feed(agg, events)
    batch = agg.flush(1)
    want = [
        e
        for e in events
        if partition_of(e.txid, TOTAL) in raw_parts
        and event_type(e) in {"bid", "impression", "click", "billing"}
    ]
    rows = rows_of(batch.chunks)
    assert batch.raw == [] and batch.raw_count == len(rows)
    assert sorted(r.json for r in rows) == sorted(msgspec.json.encode(e) for e in want)
    for r in rows:
        event = msgspec.json.decode(r.json)
        assert (r.txid, r.event_type, r.ts) == (event["txid"], event["type"], event["ts"])


def test_join_is_bounded_by_count_and_event_time() -> None:
    join = BidJoin(ttl=60, max_entries=3)
    for i in range(5):
        join.put(f"t{i}", i, 1000.0 + i)
    assert len(join) == 3 and join.evicted == 2
    assert join.take("t0") is None and join.take("t3") == 3
    # left: t2 (at 1002) and t4 (at 1004)
    assert join.expire(1000.0 + 2 + 60) == 0
    assert join.expire(1000.0 + 2 + 60.5) == 1 and len(join) == 1 and join.expired == 1
    assert join.take("t4") == 4


def test_positions_count_gaps_restarts_and_new_lives_from_payload_totals() -> None:
    pos = Positions()
    pos.observe("p", "ev.0001.bid", 7, 1, 10, 10)  # first life seen from its start
    pos.observe("p", "ev.0001.bid", 7, 3, 35, 10)  # message 2 (15 payloads) lost
    assert [(x.cause, x.events) for x in pos.take_losses()] == [("gap", 15)]
    state = pos.snapshot()
    # a restarted logger: 2 more messages (20 payloads) went by while it was away
    again = Positions(persisted={(p.publisher_id, p.topic): p for p in state})
    again.observe("p", "ev.0001.bid", 7, 6, 65, 10)
    assert [(x.cause, x.events) for x in again.take_losses()] == [("restart", 20)]
    # the publisher restarted too: its new life began 4 payloads before we heard it
    again.observe("p", "ev.0001.bid", 8, 2, 9, 5)
    assert [(x.cause, x.events) for x in again.take_losses()] == [("publisher_restart", 4)]
    # a stream never held before: its history predates this logger, not a loss
    again.observe("q", "ev.0001.bid", 1, 50, 500, 10)
    assert again.take_losses() == []
    assert {p.publisher_id: p.total for p in again.take_dirty()} == {"p": 9, "q": 500}


def test_batches_round_trip_through_msgpack() -> None:
    agg = aggregator(raw=frozenset(range(64)))
    feed(agg, [e for tx in world(20) for e in tx])
    agg.positions.observe("p", "ev.0001.bid", 1, 1, 3, 3)
    batch = agg.flush(9)
    assert decode_batch(encode_batch(batch)) == batch
    assert batch.positions == [Position("p", "ev.0001.bid", 1, 1, 3)]


def test_coverage_spans_the_minutes_listened_through() -> None:
    agg = aggregator()
    t0 = 1_796_000_000.0 // 60 * 60
    feed(
        agg, [AuctionEvent(txid="a", ts=t0 + 5, bidder_id="b", exchange="e", imps=1, outcome="bid")]
    )
    assert agg.flush(1).coverage == [int(t0)]
    feed(
        agg,
        [AuctionEvent(txid="b", ts=t0 + 200, bidder_id="b", exchange="e", imps=1, outcome="bid")],
    )
    assert agg.flush(2).coverage == [int(t0), int(t0) + 60, int(t0) + 120, int(t0) + 180]


@pytest.mark.parametrize("p", [-0.5, 1.5, float("nan")])
def test_out_of_range_click_probabilities_add_nothing(p: float) -> None:
    agg = aggregator()
    ts = 1_796_000_000.0
    bid = BidEvent(
        txid="z:1:b",
        ts=ts,
        imp_id="1",
        campaign_id=1,
        creative_id=2,
        bid_cpm_micros=1,
        floor_cpm_micros=0,
        value_cpm_micros=1,
        p_click=p,
        p_install=0.0,
        auction_type=2,
    )
    feed(agg, [bid, ImpressionEvent(txid="z:1:b", ts=ts + 1, campaign_id=1, creative_id=2)])
    rows = {r.event_type: r for r in agg.flush(1).rows}
    assert rows["impression"].joined == 1 and rows["impression"].p_click_e9 == 0


def test_batch_decoding_agrees_with_the_per_event_reference() -> None:
    events = [e for tx in world(600, seed=21) for e in tx]
    raw = frozenset(range(0, 64, 3))
    fast, slow = aggregator(raw=raw), aggregator(raw=raw)
    for agg in (fast, slow):
        agg.raw_types = frozenset(EVENT_TYPES)  # every type, the auction too
    by_topic: dict[str, list[bytes]] = defaultdict(list)
    for e in events:
        by_topic[topic_for(e, TOTAL)].append(encode(e))
    for topic, payloads in by_topic.items():
        partition, kind = int(topic.split(".")[1]), topic.rsplit(".", 1)[1]
        for i in range(0, len(payloads), 40):
            fast.add(topic, partition, kind, payloads[i : i + 40])
            slow.add_each(topic, partition, kind, payloads[i : i + 40])
    assert fast.cells == slow.cells
    assert fast.raw == slow.raw
    assert fast.watermark == slow.watermark
    assert fast.events_in == slow.events_in
    assert fast.flush(1) == slow.flush(1)


def test_a_foreign_event_type_on_a_topic_is_dropped_not_miscounted() -> None:
    agg = aggregator()
    ts = 1_796_000_000.0
    imp = ImpressionEvent(txid="k:1:b", ts=ts, campaign_id=1, creative_id=2)
    auction = AuctionEvent(txid="k:1:b", ts=ts, bidder_id="b", exchange="e", imps=1, outcome="bid")
    partition = partition_of(imp.txid, TOTAL)
    assert agg.add("ev.x.impression", partition, "impression", [encode(imp), encode(auction)]) == 1
    assert agg.dropped == {"undecodable": 1}


@pytest.mark.parametrize("raw", [frozenset(), frozenset(range(64))])
def test_an_event_missing_a_field_the_aggregates_need_is_dropped(raw: frozenset[int]) -> None:
    agg = aggregator(raw=raw)
    ts = 1_796_000_000.0
    good = ImpressionEvent(txid="m:1:b", ts=ts, campaign_id=1, creative_id=2)
    partial = msgspec.msgpack.encode({"type": "impression", "txid": "m:1:b", "ts": ts})
    partition = partition_of(good.txid, TOTAL)
    assert agg.add("ev.x.impression", partition, "impression", [encode(good), partial]) == 1
    assert agg.dropped == {"undecodable": 1}
    assert agg.raw_rows == len(rows_of(agg.raw)) == (1 if raw else 0)
