"""The memcached adapter against a real memcached: versioned writes, leases, counters, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from conftest_cache import eventually

from cache.codec import Record
from cache.errors import L2Unavailable
from cache.memcache import L2
from fleet.pg import free_port
from fleet.processes import MemcachedProcess


@pytest.fixture
async def l2(memcached: tuple[str, int]) -> AsyncIterator[L2]:
    store = L2([memcached], prefix="t", pool_size=2, timeout=0.3, retry=0.1)
    await store.start()
    yield store
    await store.close()


def value(version: int, data: bytes = b"x", loaded_at: float = 1.0) -> Record:
    return Record(version=version, loaded_at=loaded_at, payload=data)


async def test_records_only_move_forward(l2: L2) -> None:
    assert await l2.write_if_newer("ns", "k", value(5, b"five"), 60)
    assert not await l2.write_if_newer("ns", "k", value(4, b"four"), 60)
    records, floor = await l2.read("ns", ["k", "missing"])
    assert records == {"k": value(5, b"five")} and floor == 0
    # An invalidation at 7 replaces it with a tombstone; an old fill cannot come back.
    assert await l2.write_if_newer("ns", "k", Record(version=7, loaded_at=2.0), 60)
    assert not await l2.write_if_newer("ns", "k", value(6, b"six"), 60)
    # A value loaded after the invalidation (stamped 7) beats the tombstone.
    assert await l2.write_if_newer("ns", "k", value(7, b"seven", 3.0), 60)
    records, _ = await l2.read("ns", ["k"])
    assert records["k"].payload == b"seven"


async def test_concurrent_writers_keep_the_highest_version(l2: L2) -> None:
    await asyncio.gather(
        *(l2.write_if_newer("ns", "race", value(v, str(v).encode()), 60) for v in range(1, 41))
    )
    records, _ = await l2.read("ns", ["race"])
    assert records["race"].version == 40


async def test_namespace_floor_only_rises(l2: L2) -> None:
    assert await l2.raise_floor("ns", 10, 60)
    assert not await l2.raise_floor("ns", 9, 60)
    assert await l2.raise_floor("ns", 11, 60)
    _, floor = await l2.read("ns", [])
    assert floor == 11


async def test_lease_is_exclusive_until_released(l2: L2) -> None:
    results = await asyncio.gather(*(l2.try_lease("ns", "k", f"p{i}", 2) for i in range(10)))
    assert sum(results) == 1
    records, _, held = await l2.poll("ns", "k")
    assert held and records == {}
    await l2.release_lease("ns", "k")
    _, _, held = await l2.poll("ns", "k")
    assert not held
    assert await l2.try_lease("ns", "k", "p0", 2)


async def test_counters_are_atomic(l2: L2) -> None:
    counts = await asyncio.gather(*(l2.counter_add("freq", "u1", 1, 60) for _ in range(50)))
    assert sorted(counts) == list(range(1, 51))
    assert await l2.counter_get("freq", ["u1", "u2"]) == {"u1": 50}
    assert await l2.counter_seed("freq", "u2", 7, 60) == 7
    assert await l2.counter_seed("freq", "u2", 9, 60) == 7


async def test_oversized_records_are_not_stored(memcached: tuple[str, int]) -> None:
    store = L2([memcached], prefix="t", value_max_bytes=100)
    await store.start()
    try:
        assert not await store.write_if_newer("ns", "big", value(1, b"z" * 200), 60)
        assert await store.write_if_newer("ns", "small", value(1, b"z" * 10), 60)
    finally:
        await store.close()


async def test_down_server_fails_fast_then_recovers() -> None:
    server = MemcachedProcess(free_port())
    changes: list[bool] = []
    store = L2([server.address], prefix="t", timeout=0.3, retry=0.1, on_change=changes.append)
    await store.start()  # nothing listening yet: starts down, probes in the background
    try:
        assert not store.up
        t0 = time.monotonic()
        with pytest.raises(L2Unavailable):
            await store.read("ns", ["k"])
        assert time.monotonic() - t0 < 0.05  # no network while down
        server.start()
        assert await eventually(lambda: store.up)
        assert await store.write_if_newer("ns", "k", value(1), 60)
        server.kill()
        with pytest.raises(L2Unavailable):
            await store.read("ns", ["k"])
        assert not store.up
        server.start()
        assert await eventually(lambda: store.up)
        records, _ = await store.read("ns", ["k"])
        assert records == {}  # a restarted memcached is empty: never stale
        assert changes == [False, True, False, True]
    finally:
        await store.close()
        server.stop()
