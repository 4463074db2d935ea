"""Roll-ups, retention and the creative feed against a real Postgres, and the feed's way into
another process's L1 through memcached and the coherence bus."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg
import pytest
from bidlogger_world import expected, world
from conftest_bidlogger import eventually, fetch, forget_earlier_garbage
from conftest_cache import cache_settings, proxy_process
from prometheus_client import CollectorRegistry

from bidlogger.aggregate import Aggregator, BidJoin
from bidlogger.app import FeedPublisher
from bidlogger.maintenance import Maintenance, Retention
from bidlogger.store import Store
from cache.app import Cache
from cache.creative_stats import CreativeFeed, creative_namespace
from fleet.events import AnyEvent, encode, event_type, partition_of, topic_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _earlier_garbage() -> None:
    forget_earlier_garbage()


DAY = 86_400
NOW = 1_796_000_000.0 // DAY * DAY + 12 * 3600  # noon
SHARDS = ("0-31/64", "32-63/64")


def aggregators() -> dict[str, Aggregator]:
    return {
        shard: Aggregator(
            logger_id=f"l{i}",
            shard=shard,
            partitions_covered=32,
            partitions_total=64,
            join=BidJoin(3600, 10**6),
            raw_partitions=frozenset(range(64)),
            raw_types=frozenset({"auction"}),
        )
        for i, shard in enumerate(SHARDS)
    }


def feed(aggs: dict[str, Aggregator], events: list[AnyEvent]) -> None:
    for e in events:
        shard = SHARDS[0] if partition_of(e.txid) < 32 else SHARDS[1]
        aggs[shard].add(topic_for(e), partition_of(e.txid), event_type(e), [encode(e)])


async def apply_all(dsn: str, aggs: dict[str, Aggregator], seq: int) -> None:
    store = Store(dsn)
    try:
        for agg in aggs.values():
            assert await store.apply(agg.flush(seq))
    finally:
        await store.close()


async def test_rollups_retention_and_the_feed(pg_dsn: str) -> None:
    old = [e for tx in world(200, start=NOW - 10 * DAY, seed=1) for e in tx]
    recent = world(900, start=NOW - 2 * 3600, seed=2)  # two hours back, so two hours roll up
    aggs = aggregators()
    feed(aggs, old)
    await apply_all(pg_dsn, aggs, 1)
    feed(aggs, [e for tx in recent for e in tx])
    await apply_all(pg_dsn, aggs, 2)

    async def day_partitions() -> set[str]:
        rows = await fetch(
            pg_dsn,
            "SELECT relname FROM pg_class "
            "WHERE relname ~ '^bidlogger_(raw|minute)_[0-9]{8}$' AND relkind = 'r'",
        )
        return {r["relname"] for r in rows}

    before_days = await day_partitions()
    assert len(before_days) == 4  # minute and raw, the old day and today

    job = Maintenance(pg_dsn, lock_key=4242, retention=Retention(7, 30, 0), feed_days=7)
    rival = Maintenance(pg_dsn, lock_key=4242, retention=Retention(7, 30, 0), feed_days=7)
    try:
        result = await job.run()
        assert result is not None and await rival.run() is None  # one leads at a time
        report, counts = result
        assert report.hours_rolled > 0 and report.days_rolled > 0
        assert report.partitions_dropped == 2  # the old day's minute and raw partitions
        dropped = before_days - await day_partitions()
        assert {name[-8:] for name in dropped} == {
            (await fetch(pg_dsn, "SELECT to_char(to_timestamp($1) AT TIME ZONE 'UTC', "
                         "'YYYYMMDD') AS d", NOW - 10 * DAY))[0]["d"]
        }  # fmt: skip
        # the hourly and daily tiers add up to the events, per shard and in the fleet views
        exp = expected(recent)
        per_hour: dict[tuple[int, int, int, str], int] = defaultdict(int)
        for (minute, campaign, creative, kind), n in exp.events.items():
            per_hour[(minute // 3600 * 3600, campaign, creative, kind)] += n
        rows = await fetch(
            pg_dsn,
            "SELECT extract(epoch FROM hour)::bigint AS h, campaign_id, creative_id, event_type, "
            "events, estimated FROM bidlogger_hourly_fleet WHERE hour >= to_timestamp($1)",
            NOW - 3 * DAY,
        )
        assert {(r["h"], r["campaign_id"], r["creative_id"], r["event_type"]): r["events"]
                for r in rows} == dict(per_hour)  # fmt: skip
        assert not any(r["estimated"] for r in rows)  # the two shards cover all 64 partitions
        daily = await fetch(
            pg_dsn,
            "SELECT sum(events)::bigint AS n FROM bidlogger_daily_fleet WHERE day >= $1::date",
            (await fetch(pg_dsn, "SELECT (to_timestamp($1) AT TIME ZONE 'UTC')::date AS d",
                         NOW - 3 * DAY))[0]["d"],
        )  # fmt: skip
        assert daily[0]["n"] == sum(exp.events.values())
        left = await fetch(pg_dsn, "SELECT count(*) AS n FROM bidlogger_minute")
        assert left[0]["n"] > 0  # recent minutes stay
        # the feed: impressions and clicks per creative over the window
        want: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for (_, _, creative, kind), n in exp.events.items():
            if kind in ("impression", "click"):
                want[creative][0 if kind == "impression" else 1] += n
        assert {cid: (i, c) for cid, (i, c, _) in counts.items()} == {
            cid: (i, c) for cid, (i, c) in want.items()
        }
        table = await fetch(pg_dsn, "SELECT creative_id, impressions, clicks FROM creative_stats")
        assert {r["creative_id"]: (r["impressions"], r["clicks"]) for r in table} == {
            cid: (i, c) for cid, (i, c) in want.items()
        }
        # a second pass changes nothing
        before = await fetch(pg_dsn, "SELECT * FROM bidlogger_hourly ORDER BY 1, 2, 3, 4, 5")
        again = await job.run()
        assert again is not None and again[0].hours_rolled == 0
        assert (
            await fetch(pg_dsn, "SELECT * FROM bidlogger_hourly ORDER BY 1, 2, 3, 4, 5") == before
        )
    finally:
        await job.close()
        await rival.close()


async def test_a_sampled_shard_is_scaled_and_marked_in_every_tier(pg_dsn: str) -> None:
    txs = world(600, start=NOW - 3600, seed=4)
    aggs = aggregators()
    feed(aggs, [e for tx in txs for e in tx])
    store = Store(pg_dsn)
    try:
        assert await store.apply(aggs[SHARDS[0]].flush(1))  # only the first half reports
        assert not await store.apply(aggs[SHARDS[0]].flush(1))  # a re-sent batch: nothing
    finally:
        await store.close()
    job = Maintenance(pg_dsn, lock_key=4243, retention=Retention(7, 30, 0), feed_days=7)
    try:
        assert await job.run() is not None
    finally:
        await job.close()
    half = expected(txs, set(range(32)))
    for view, period in (("bidlogger_minute_fleet", "minute"), ("bidlogger_hourly_fleet", "hour")):
        rows = await fetch(
            pg_dsn, f"SELECT {period}, event_type, events, events_seen, estimated FROM {view}"
        )
        assert rows and all(r["estimated"] for r in rows)
        assert all(r["events"] == round(r["events_seen"] * 2) for r in rows)
        assert sum(r["events_seen"] for r in rows) == sum(half.events.values())


async def test_the_feed_reaches_another_process_l1_through_the_cache(
    pg_dsn: str, memcached: tuple[str, int]
) -> None:
    with proxy_process() as bus:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        logger_cache = Cache(cache_settings(memcached, bus), registry=CollectorRegistry(),
                             origin="bidlogger-test")  # fmt: skip
        bidder_cache = Cache(cache_settings(memcached, bus), registry=CollectorRegistry(),
                             origin="bidder-test")  # fmt: skip
        logger_cache.register(creative_namespace(pool))
        region = bidder_cache.register(creative_namespace(pool))
        performance = CreativeFeed(region)
        try:
            await logger_cache.start()
            await bidder_cache.start()
            await bidder_cache.warm()
            assert performance.stats(11) is None  # nothing published yet
            publish = FeedPublisher(logger_cache, 7 * DAY)
            await publish({11: (1000, 12, False), 12: (400, 1, True)}, NOW)
            await eventually(lambda: performance.stats(11) == (1000, 12), 10)
            assert performance.stats(12) == (400, 1) and performance.stats(99) is None
            snapshot = region.peek("counts")
            assert snapshot is not None and snapshot.estimated and snapshot.as_of == NOW
        finally:
            await bidder_cache.close()
            await logger_cache.close()
            await pool.close()
        await asyncio.sleep(0)
