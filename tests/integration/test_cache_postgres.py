"""The config snapshot through the cache, and what happens when Postgres goes away and comes back
(the session's server is stopped and started again here: it is running when the test ends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from conftest_cache import bus, cache_settings, eventually, seed_config
from prometheus_client import CollectorRegistry

from cache.app import Cache
from cache.loaders import config_namespace
from cache.watcher import run_watcher
from fleet.config import ConfigSnapshot
from fleet.pg import LocalPostgres

__all__ = ["bus"]


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await seed_config(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2, timeout=1)
    try:
        yield pool
    finally:
        pool.terminate()


async def test_config_snapshot_is_warmed_and_peeked(
    pool: asyncpg.Pool, memcached: tuple[str, int]
) -> None:
    cache = Cache(cache_settings(memcached), registry=CollectorRegistry())
    cache.register(config_namespace(pool))
    await cache.start()
    try:
        assert await cache.warm() == 1
        snapshot = cache.peek("config", "snapshot")
        assert isinstance(snapshot, ConfigSnapshot)
        assert [c.name for c in snapshot.campaigns] == ["campaign 1", "campaign 2", "campaign 3"]
        # A second process finds it in L2, typed, without a load.
        other = Cache(cache_settings(memcached), registry=CollectorRegistry())
        other.register(config_namespace(pool))
        await other.start()
        try:
            assert await other.get("config", "snapshot") == snapshot
            assert other.region("config").counts.l2_hits == 1
            assert other.region("config").counts.l3_loads == 0
        finally:
            await other.close()
    finally:
        await cache.close()


async def test_postgres_restarted_serves_stale_within_bound_then_recovers(
    pool: asyncpg.Pool, pg_server: LocalPostgres, memcached: tuple[str, int]
) -> None:
    ttl, max_stale = 0.4, 1.0
    cache = Cache(cache_settings(memcached), registry=CollectorRegistry())
    cache.register(config_namespace(pool, ttl=ttl, max_stale=max_stale))
    await cache.start()
    try:
        await cache.warm()
        loaded_at = time.monotonic()
        pg_server.stop()
        try:
            # Fresh, then stale while refreshes fail: still served...
            served_until = loaded_at + ttl + max_stale - 0.15
            while time.monotonic() < served_until:
                assert cache.peek("config", "snapshot") is not None
                await asyncio.sleep(0.02)
            assert cache.region("config").counts.load_errors >= 1
            # ...but never past ttl + max_stale: then a miss, whatever is asked.
            await asyncio.sleep(max(0.0, loaded_at + ttl + max_stale + 0.1 - time.monotonic()))
            for _ in range(10):
                assert cache.peek("config", "snapshot") is None
                await asyncio.sleep(0.02)
        finally:
            pg_server.start()
        assert await eventually(lambda: cache.peek("config", "snapshot") is not None, timeout=10)
        async with pool.acquire() as conn:
            await conn.execute("UPDATE campaigns SET name = 'renamed' WHERE id = 1")
        await cache.invalidate("config", "snapshot", version=10**9)
        assert await eventually(
            lambda: (
                (s := cache.peek("config", "snapshot")) is not None
                and s.campaign(1).name == "renamed"
            ),
            timeout=5,
        )
    finally:
        await cache.close()


async def test_watcher_reconnects_after_postgres_restart(
    pool: asyncpg.Pool,
    pg_dsn: str,
    pg_server: LocalPostgres,
    memcached: tuple[str, int],
    bus: tuple[str, str],
) -> None:
    settings = cache_settings(memcached, bus, pg_dsn=pg_dsn)
    leading: list[bool] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        run_watcher(settings, stop=stop, registry=CollectorRegistry(), on_leader=leading.append)
    )
    cache = Cache(settings, registry=CollectorRegistry())
    cache.register(config_namespace(pool))

    def name() -> str:
        snap = cache.peek("config", "snapshot")
        campaign = snap.campaign(1) if snap is not None else None
        return campaign.name if campaign is not None else ""

    try:
        assert await eventually(lambda: leading == [True], timeout=10)
        await cache.start()
        await cache.warm()
        pg_server.stop()
        try:
            assert await eventually(lambda: leading == [True, False], timeout=10)
        finally:
            pg_server.start()
        assert await eventually(lambda: leading == [True, False, True], timeout=10)
        async with pool.acquire() as conn:
            await conn.execute("UPDATE campaigns SET name = 'after restart' WHERE id = 1")
        assert await eventually(lambda: name() == "after restart", timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)
        await cache.close()
    assert leading[-1] is False
