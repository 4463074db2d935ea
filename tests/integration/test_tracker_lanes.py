"""Spend lanes against real Postgres: a commit adds its spend to its own lane's row, so it does
not wait for another commit holding a lane of the same campaign and day; every reader of spend
sums the lanes; folding past days into one row changes no sum."""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg
import pytest
from conftest_tracker import notice_query, seed, tracker_world

from pacing.pacer import Spend
from pacing.store import load_spend
from sim.trackercounts import baseline
from tracker.pauses import read_standings
from tracker.store import create_pool, fold_lanes

pytestmark = pytest.mark.integration

DAY = date(2027, 1, 15)  # the fleet clock's day (NOW) in campaign 1's timezone (UTC)


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await seed(pg_dsn)
    return pg_dsn


async def test_a_commit_does_not_wait_for_a_lock_on_another_lane(dsn: str) -> None:
    async with tracker_world(dsn, lanes=(0,)) as lane0:
        assert (await lane0.get("/bill", notice_query("bill", "l:1:a"))).status == 204
    holder = await asyncpg.connect(dsn)
    try:
        # a commit of lane 0 in flight: it holds the lock of lane 0's spend row of the day
        tx = holder.transaction()
        await tx.start()
        locked = await holder.fetchval(
            "SELECT spent_micros FROM campaign_spend WHERE campaign_id = 1 AND day = $1 "
            "AND lane = 0 FOR UPDATE",
            DAY,
        )
        assert locked == 2_500
        async with tracker_world(dsn, lanes=(1,)) as lane1:
            answer = await asyncio.wait_for(lane1.get("/bill", notice_query("bill", "l:1:b")), 5)
            assert answer.status == 204  # committed while lane 0's row stayed locked
        async with tracker_world(dsn, lanes=(0,), timeout=0.5) as same_lane:
            # the same lane waits for the lock, as every commit of a campaign did before lanes
            blocked = await same_lane.get("/bill", notice_query("bill", "l:1:c"))
            assert blocked.status == 503
            await tx.rollback()
            await asyncio.sleep(same_lane.committer.fail_fast)
            again = await same_lane.get("/bill", notice_query("bill", "l:1:c"))
            assert again.status == 204  # counted now, or found counted by the first attempt
    finally:
        await holder.close()
    conn = await asyncpg.connect(dsn)
    try:
        lanes = await conn.fetch(
            "SELECT lane, spent_micros, impressions FROM campaign_spend ORDER BY lane"
        )
        assert [tuple(r) for r in lanes] == [(0, 5_000, 2), (1, 2_500, 1)]
        creative = await conn.fetch(
            "SELECT lane, spent_micros FROM tracker_creative_spend ORDER BY lane"
        )
        assert [tuple(r) for r in creative] == [(0, 5_000), (1, 2_500)]
        daily = await conn.fetch(
            "SELECT campaign_id, day, spent_micros, impressions FROM campaign_spend_daily"
        )
        assert [tuple(r) for r in daily] == [(1, DAY, 7_500, 3)]
        total = await conn.fetchrow("SELECT * FROM campaign_spend_total")
        assert (total["campaign_id"], total["spent_micros"], total["impressions"]) == (1, 7_500, 3)
    finally:
        await conn.close()


async def test_concurrent_commits_spread_over_their_lanes_and_count_once(dsn: str) -> None:
    queries = [notice_query("bill", f"c:{i}:x") for i in range(120)]
    async with tracker_world(dsn, lanes=(5, 6, 7, 8), batch_max=10) as w:
        answers = await asyncio.gather(*(w.get("/bill", q) for q in queries + queries[:30]))
        assert {a.status for a in answers} == {204}
        assert w.value("tracker_notices_total", kind="bill", outcome="counted") == 120
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT lane, spent_micros, impressions FROM campaign_spend")
        assert {r["lane"] for r in rows} <= {5, 6, 7, 8} and len(rows) >= 2
        assert sum(r["impressions"] for r in rows) == 120
        assert sum(r["spent_micros"] for r in rows) == 120 * 2_500
    finally:
        await conn.close()


async def test_every_reader_sums_the_lanes(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO campaign_spend (campaign_id, day, lane, spent_micros, impressions) "
            "VALUES (1, $1, 0, 1000, 1), (1, $1, 3, 2000, 2), (1, $1, 9, 4000, 4), "
            "(1, $2, 0, 500, 1), (1, $2, 2, 250, 1)",
            DAY,
            date(2027, 1, 14),
        )
        await conn.execute(
            "INSERT INTO tracker_creative_spend "
            "(creative_id, campaign_id, day, lane, spent_micros, impressions) "
            "VALUES (10, 1, $1, 0, 1000, 1), (10, 1, $1, 3, 6000, 6), (10, 1, $2, 1, 750, 2)",
            DAY,
            date(2027, 1, 14),
        )
        # the pacer: today's spend and the days before
        assert await load_spend(conn, {1: DAY}) == {1: Spend(today=7_000, before=750)}
        # the cost-per-activation rule: the campaign's and the creative's spend
        standings = {(s.level, s.entity_id): s.spend_micros for s in await read_standings(conn)}
        assert standings[("campaign", 1)] == 7_750 and standings[("creative", 10)] == 7_750
        daily = await conn.fetch(
            "SELECT day, spent_micros, impressions FROM campaign_spend_daily ORDER BY day"
        )
        assert [tuple(r) for r in daily] == [(date(2027, 1, 14), 750, 2), (DAY, 7_000, 7)]
    finally:
        await conn.close()
    # the demo report's books
    books = await baseline(dsn)
    assert books is not None and books.by_campaign == {1: 7_750}


async def test_folding_brings_past_days_to_one_row_and_keeps_every_sum(dsn: str) -> None:
    old, recent = date(2027, 1, 10), DAY
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO campaign_spend (campaign_id, day, lane, spent_micros, impressions) "
            "VALUES (1, $1, 0, 100, 1), (1, $1, 4, 200, 2), (1, $1, 6, 300, 3), "
            "(2, $1, 6, 50, 1), (1, $2, 4, 1000, 1), (1, $2, 5, 2000, 2)",
            old,
            recent,
        )
        await conn.execute(
            "INSERT INTO tracker_creative_spend "
            "(creative_id, campaign_id, day, lane, spent_micros, impressions) "
            "VALUES (10, 1, $1, 4, 200, 2), (10, 1, $1, 6, 400, 4), (10, 1, $2, 5, 3000, 3)",
            old,
            recent,
        )
        sums = "SELECT campaign_id, day, spent_micros, impressions FROM campaign_spend_daily"
        before = sorted(tuple(r) for r in await conn.fetch(sums))
        pool = await create_pool(dsn, 1)
        try:
            assert await fold_lanes(pool, date(2027, 1, 13)) == 5  # 3 + 2 rows not on lane 0
            assert await fold_lanes(pool, date(2027, 1, 13)) == 0
        finally:
            await pool.close()
        assert sorted(tuple(r) for r in await conn.fetch(sums)) == before
        rows = await conn.fetch(
            "SELECT campaign_id, day, lane, spent_micros, impressions FROM campaign_spend "
            "ORDER BY campaign_id, day, lane"
        )
        assert [tuple(r) for r in rows] == [
            (1, old, 0, 600, 6),
            (1, recent, 4, 1000, 1),  # recent days keep their lanes
            (1, recent, 5, 2000, 2),
            (2, old, 0, 50, 1),
        ]
        creative = await conn.fetch(
            "SELECT day, lane, spent_micros, impressions FROM tracker_creative_spend "
            "ORDER BY day, lane"
        )
        assert [tuple(r) for r in creative] == [(old, 0, 600, 6), (recent, 5, 3000, 3)]
    finally:
        await conn.close()
