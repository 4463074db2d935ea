"""The bidder against a real Postgres: config changes arrive through the cache (the config
watcher's invalidations over a real coherence-bus proxy), recorded spend stops a campaign at its
budget, and a Postgres restart costs nothing but freshness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from conftest_bidder import (
    RawClient,
    banner_request,
    bus_env,
    config_watcher,
    make_settings,
    metric,
    run_uv,
    running_service,
)
from conftest_cache import proxy_process

from fleet.pg import LocalPostgres
from fleet.portfolio import load_document
from sim.portfolio import catch_all


def pg_settings(dsn: str, **env: str):  # type: ignore[no-untyped-def]
    base = {
        "RTBFLEET_PG_DSN": dsn,
        "RTBFLEET_BIDDER_SNAPSHOT_REFRESH": "600",  # only the bus can deliver a change in time
        "RTBFLEET_CACHE_TTL_SECONDS": "600",
        "RTBFLEET_CACHE_BUS": "0",
        "RTBFLEET_BIDDER_NOTIFY_DEBOUNCE_MS": "20",
        "RTBFLEET_BIDDER_SPEND_REFRESH": "0.2",
    }
    base.update(env)
    return make_settings(**base)


async def wait_status(c: RawClient, status: int, timeout: float = 5.0) -> float:
    """Bid until the answer has ``status``; the seconds it took."""
    started = time.monotonic()
    while True:
        reply = await c.bid(banner_request())
        if reply.status == status:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"still {reply.status} after {timeout}s"
        await asyncio.sleep(0.02)


@pytest.fixture
def bus() -> Iterator[tuple[str, str]]:
    """A real coherence-bus proxy (``python -m fleet.proxy``): (in, out) endpoints."""
    with proxy_process() as endpoints:
        yield endpoints


def test_a_config_change_reaches_the_running_bidder(pg_dsn: str, bus: tuple[str, str]) -> None:
    """UPDATE in Postgres -> NOTIFY -> the cache's config watcher -> invalidation on the
    coherence bus -> the bidder's cache refills ``config/snapshot`` -> new targeting index.
    The bidder itself does not LISTEN (and its safety-net check is 10 minutes away)."""

    async def scenario() -> None:
        await load_document(pg_dsn, catch_all())
        settings = pg_settings(pg_dsn, **bus_env(bus))
        async with config_watcher(settings), running_service(settings) as service:
            c = RawClient(service.port)
            assert (await c.bid(banner_request())).status == 200
            conn = await asyncpg.connect(pg_dsn)
            try:
                await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = 1")
                paused_after = await wait_status(c, 204)
                await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = 1")
                await wait_status(c, 200)
                await conn.execute("UPDATE campaigns SET max_bid_cpm_micros = 7000 WHERE id = 1")
                await wait_status(c, 204)  # below the floor of 0.10 now
            finally:
                await conn.close()
            print(f"pause seen by the bidder after {paused_after * 1000:.0f} ms")
            assert paused_after < 2.0
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_config_loads_total", result="applied") >= 4
            assert metric(text, "bidder_postgres_up") == 1
            # The cache's own metrics are in the bidder's exposition.
            assert metric(text, "cache_invalidations_total", namespace="config", source="bus") >= 3
            assert metric(text, "cache_hits_total", tier="l3", namespace="config") >= 4
            assert "cache_l2_up" in text and "cache_fill_seconds_bucket" in text
            await c.close()

    run_uv(scenario())


def test_recorded_spend_stops_a_campaign_at_its_budget(pg_dsn: str) -> None:
    async def scenario() -> None:
        await load_document(pg_dsn, catch_all())
        async with running_service(pg_settings(pg_dsn)) as service:
            c = RawClient(service.port)
            assert (await c.bid(banner_request())).status == 200
            conn = await asyncpg.connect(pg_dsn)
            try:
                daily = await conn.fetchval("SELECT daily_budget_micros FROM campaigns WHERE id=1")
                today = datetime.now(UTC).date()  # the catch-all campaign keeps UTC days
                await conn.execute(  # the day's spend on two of the tracker's lanes
                    "INSERT INTO campaign_spend (campaign_id, day, lane, spent_micros) "
                    "VALUES (1, $1, 0, $2), (1, $1, 5, $3)",
                    today,
                    daily // 2,
                    daily - daily // 2 - 1_000,  # less than one impression at the bid price is left
                )
                await wait_status(c, 204)
                await conn.execute("DELETE FROM campaign_spend")
                await wait_status(c, 200)
                total = await conn.fetchval("SELECT total_budget_micros FROM campaigns WHERE id=1")
                await conn.execute(  # an older day: only the total budget is reached
                    "INSERT INTO campaign_spend (campaign_id, day, spent_micros) "
                    "VALUES (1, $1, $2)",
                    datetime(2020, 1, 1).date(),
                    total,
                )
                await wait_status(c, 204)
            finally:
                await conn.close()
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_budget_blocked_campaigns") == 1
            assert metric(text, "bidder_requests_total", outcome="nobid", reason="paced") >= 1
            await c.close()

    run_uv(scenario())


def test_a_postgres_restart_keeps_the_bidder_bidding(
    pg_dsn: str, pg_server: LocalPostgres, bus: tuple[str, str]
) -> None:
    async def scenario() -> None:
        await load_document(pg_dsn, catch_all())
        settings = pg_settings(pg_dsn, **bus_env(bus))
        async with config_watcher(settings), running_service(settings) as service:
            c = RawClient(service.port)
            assert (await c.bid(banner_request())).status == 200
            try:
                await asyncio.to_thread(pg_server.stop)
                for _ in range(10):  # the last snapshot and spend figures keep serving
                    assert (await c.bid(banner_request())).status == 200
                    await asyncio.sleep(0.1)
                text = (await c.request("GET", "/metrics")).body.decode()
                assert metric(text, "bidder_postgres_up") == 0
            finally:
                await asyncio.to_thread(pg_server.start)
            conn = await asyncpg.connect(pg_dsn)
            try:
                await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = 1")
            finally:
                await conn.close()
            await wait_status(c, 204, timeout=15)  # the watcher reconnected and invalidated
            # The spend reader reconnects on its own back-off (at most 5 s between tries).
            deadline = time.monotonic() + 10
            while True:
                text = (await c.request("GET", "/metrics")).body.decode()
                if metric(text, "bidder_postgres_up") == 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert metric(text, "bidder_postgres_up") == 1
            await c.close()

    run_uv(scenario())
