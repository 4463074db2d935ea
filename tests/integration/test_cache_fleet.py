"""The cache across OS processes: bidder-like workers (tests/cache/cache_worker.py), config
watchers (``python -m cache watcher``), a bus proxy, memcached and Postgres, all real."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator

import asyncpg
import pytest
from conftest_cache import (
    Process,
    Worker,
    bus,
    cache_settings,
    eventually,
    pg_conn,
    seed_config,
    settings_env,
    watcher_leader,
)
from prometheus_client import CollectorRegistry

from cache.app import Cache
from cache.loaders import config_namespace

__all__ = ["bus", "pg_conn"]


@pytest.fixture
def stack() -> Iterator[list[Worker | Process]]:
    """Processes started by a test, stopped at its end whatever happens."""
    started: list[Worker | Process] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


async def wait_leader(
    conn: asyncpg.Connection, timeout: float = 10.0, other_than: int | None = None
) -> int:
    """The pid of the leading watcher; with ``other_than``, of a leader that is not that one (a
    killed leader's backend holds the lock until Postgres has seen its connection drop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = await watcher_leader(conn)
        if pid is not None and pid != other_than:
            return pid
        await asyncio.sleep(0.05)
    raise TimeoutError("no watcher took the lead")


async def test_config_update_reaches_four_processes(
    pg_dsn: str,
    pg_conn: asyncpg.Connection,
    memcached: tuple[str, int],
    bus: tuple[str, str],
    stack: list[Worker | Process],
) -> None:
    await seed_config(pg_conn)
    env = settings_env(cache_settings(memcached, bus, pg_dsn=pg_dsn))
    watcher = Process(["-m", "cache", "watcher"], env)
    stack.append(watcher)
    await wait_leader(pg_conn)
    workers = [Worker(f"bidder{i}", env, ["--mode", "config"]) for i in range(4)]
    stack.extend(workers)
    for w in workers:
        assert (await asyncio.to_thread(w.expect, "ready", 20))["name"] == "campaign 1"
    latencies: list[float] = []
    for n in range(3):
        name = f"renamed {n}"
        t0 = time.time()
        await pg_conn.execute("UPDATE campaigns SET name = $1 WHERE id = 1", name)
        for w in workers:
            seen = await asyncio.to_thread(w.expect, "seen", 10)
            assert seen["name"] == name
            latencies.append(seen["t"] - t0)
    print(
        f"\nUPDATE -> seen by 4 processes, {len(latencies)} samples: "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 2.0


async def test_cold_start_loads_each_key_once_across_eight_processes(
    pg_dsn: str,
    pg_conn: asyncpg.Connection,
    memcached: tuple[str, int],
    bus: tuple[str, str],
    stack: list[Worker | Process],
) -> None:
    keys = 1000
    await pg_conn.execute("CREATE TABLE load_counts (key text PRIMARY KEY, n integer NOT NULL)")
    env = settings_env(
        cache_settings(memcached, bus, pg_dsn=pg_dsn, lease_seconds=5, load_timeout=5.0)
    )
    workers = [Worker(f"bidder{i}", env, ["--mode", "cold", "--keys", str(keys)]) for i in range(8)]
    stack.extend(workers)
    for w in workers:
        await asyncio.to_thread(w.expect, "ready", 30)
    start = time.time() + 0.5
    for w in workers:
        w.send(f"go {start}")
    done = [await asyncio.to_thread(w.expect, "done", 60) for w in workers]
    for d in done:
        assert d["ok"] == keys, d["errors"]
    rows = await pg_conn.fetch("SELECT key, n FROM load_counts")
    counts = {r["key"]: r["n"] for r in rows}
    assert len(counts) == keys
    assert set(counts.values()) == {1}, {k: n for k, n in counts.items() if n != 1}
    assert sum(d["l3"] for d in done) == keys
    print(
        f"\n8 processes x {keys} cold keys: {len(rows)} loads, "
        f"slowest process {max(d['seconds'] for d in done):.2f} s, "
        f"lease contention {sum(d['contention'] for d in done)}"
    )


async def test_watcher_standby_takes_over_when_the_leader_dies(
    pg_dsn: str,
    pg_conn: asyncpg.Connection,
    memcached: tuple[str, int],
    bus: tuple[str, str],
    stack: list[Worker | Process],
) -> None:
    await seed_config(pg_conn)
    settings = cache_settings(memcached, bus, pg_dsn=pg_dsn)
    env = {**settings_env(settings), "RTBFLEET_LOG_LEVEL": "INFO"}
    first = Process(["-m", "cache", "watcher"], env)
    stack.append(first)
    assert await wait_leader(pg_conn) == first.pid
    second = Process(["-m", "cache", "watcher"], env)
    stack.append(second)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    cache = Cache(settings, registry=CollectorRegistry())
    cache.register(config_namespace(pool))
    try:
        await cache.start()
        await cache.warm()

        def name() -> str:
            snap = cache.peek("config", "snapshot")
            campaign = snap.campaign(1) if snap is not None else None
            return campaign.name if campaign is not None else ""

        await pg_conn.execute("UPDATE campaigns SET name = 'by first' WHERE id = 1")
        assert await eventually(lambda: name() == "by first", timeout=5)
        await asyncio.sleep(0.5)  # the standby keeps trying meanwhile
        assert await watcher_leader(pg_conn) == first.pid
        first.kill()
        t0 = time.monotonic()
        assert await wait_leader(pg_conn, other_than=first.pid) == second.pid
        takeover = time.monotonic() - t0
        await pg_conn.execute("UPDATE campaigns SET name = 'by second' WHERE id = 1")
        assert await eventually(lambda: name() == "by second", timeout=5)
        print(f"\nwatcher takeover after the leader was killed: {takeover * 1000:.0f} ms")
    finally:
        await cache.close()
        await pool.close()
    assert second.stop() == 0
    assert any("leads" in line for line in second.output), second.output[-5:]
