"""Caches in one process against a real memcached and a real bus proxy process: fills, single
flight, invalidation, stale fills, counters, metrics, memcached outages."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
from conftest_cache import bus, cache_settings, eventually
from prometheus_client import CollectorRegistry

from cache.app import Cache
from cache.errors import LoadError, UnknownNamespace
from cache.namespace import Loaded, Loader, Namespace
from fleet.processes import MemcachedProcess

__all__ = ["bus"]

Loads = Counter[str]


MakeCache = Callable[[], Awaitable[Cache]]


def counting_loader(loads: Loads, prefix: str = "value", delay: float = 0.0) -> Loader[str]:
    async def load(key: str) -> Loaded[str]:
        loads[key] += 1
        if delay:
            await asyncio.sleep(delay)
        return Loaded(f"{prefix}-{key}-{loads[key]}")

    return load


@pytest.fixture
async def caches(memcached: tuple[str, int], bus: tuple[str, str]) -> AsyncIterator[MakeCache]:
    """A factory of caches sharing memcached and the bus; closed at the end."""
    async with AsyncExitStack() as stack:

        async def make() -> Cache:
            cache = Cache(cache_settings(memcached, bus), registry=CollectorRegistry())
            stack.push_async_callback(cache.close)
            return cache

        yield make


def metric(cache: Cache, name: str, **labels: str) -> float:
    registry = cache.registry
    assert registry is not None
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_peek_never_waits_and_the_fill_follows(caches: MakeCache) -> None:
    cache: Cache = await caches()
    loads: Loads = Counter()
    region = cache.register("ns", counting_loader(loads, delay=0.05), type=str, versioning="clock")
    await cache.start()
    assert cache.peek("ns", "a") is None  # a miss: returns at once, a fill starts
    assert region.peek("a") is None
    assert await eventually(lambda: cache.peek("ns", "a") == "value-a-1", timeout=3)
    assert loads == {"a": 1}
    assert metric(cache, "cache_hits_total", tier="l1", namespace="ns") >= 1
    assert metric(cache, "cache_misses_total", tier="l1", namespace="ns") >= 2
    assert metric(cache, "cache_hits_total", tier="l3", namespace="ns") == 1
    assert metric(cache, "cache_fill_seconds_count", tier="l3", namespace="ns") == 1
    assert metric(cache, "cache_l2_up") == 1
    with pytest.raises(UnknownNamespace):
        cache.peek("nope", "a")


async def test_single_flight_in_one_process(caches: MakeCache) -> None:
    cache: Cache = await caches()
    loads: Loads = Counter()
    cache.register("ns", counting_loader(loads, delay=0.05), type=str, versioning="clock")
    await cache.start()
    for _ in range(100):
        cache.peek("ns", "k")
    values = await asyncio.gather(*(cache.get("ns", "k") for _ in range(100)))
    assert set(values) == {"value-k-1"}
    assert loads == {"k": 1}


async def test_one_load_per_key_across_caches(caches: MakeCache) -> None:
    """Three caches (as three processes would) miss on the same cold keys at once: the lease in
    memcached lets one of them load each key; the others get it from the bus or L2."""
    loads: Loads = Counter()
    members: list[Cache] = []
    for _ in range(3):
        cache: Cache = await caches()
        cache.register("ns", counting_loader(loads, delay=0.02), type=str, versioning="clock")
        await cache.start()
        members.append(cache)
    keys = [f"k{i}" for i in range(60)]
    results = await asyncio.gather(*(c.get("ns", k) for c in members for k in keys))
    assert all(r is not None and r.startswith("value-") for r in results)
    assert loads == dict.fromkeys(keys, 1)
    contention = sum(metric(c, "cache_lease_contention_total", namespace="ns") for c in members)
    assert contention >= 1


async def test_invalidation_reaches_every_cache_and_late_stale_fill_is_refused(
    caches: MakeCache,
) -> None:
    loads: Loads = Counter()
    a: Cache = await caches()
    b: Cache = await caches()
    for cache in (a, b):
        cache.register("ns", counting_loader(loads), type=str, versioning="clock")
        await cache.start()
    assert await a.get("ns", "k") == "value-k-1"
    assert await b.get("ns", "k") == "value-k-1"  # from L2
    old = b.region("ns").store.entries["k"].version
    dropped: list[tuple[str, int]] = []
    b.region("ns").add_listener(lambda event, key, version: dropped.append((event, version)))
    version = await a.invalidate("ns", "k")
    assert version > old
    assert await eventually(lambda: ("dropped", version) in dropped)
    # A fill of the old value, published before the invalidation but arriving after it: refused.
    region = b.region("ns")
    region.apply_fill("k", old, region.codec.record("value-k-1", old, 0.0))
    assert b.peek("ns", "k") is None
    assert region.store.refused >= 1
    assert await b.get("ns", "k") == "value-k-2"
    assert metric(b, "cache_invalidations_total", namespace="ns", source="bus") == 1


async def test_put_and_flush_propagate(caches: MakeCache) -> None:
    loads: Loads = Counter()
    a: Cache = await caches()
    b: Cache = await caches()
    for cache in (a, b):
        cache.register("ns", counting_loader(loads), type=str, versioning="clock")
        await cache.start()
    await b.get("ns", "k")
    await a.put("ns", "k", "computed")
    assert await eventually(lambda: b.peek("ns", "k") == "computed")
    await a.invalidate_all("ns")
    # b drops it and, since it was in use, reloads it: from L3, as the L2 copy is below the floor.
    assert await eventually(lambda: b.peek("ns", "k") == "value-k-2")
    assert await a.get("ns", "k") == "value-k-2"
    assert loads == {"k": 2}


async def test_counters_count_fleet_wide(caches: MakeCache) -> None:
    a: Cache = await caches()
    b: Cache = await caches()
    for cache in (a, b):
        cache.register(Namespace("freq", None, type=int, ttl=0.2, counter=True))
        await cache.start()
    assert await a.get("freq", "u1") == 0
    await asyncio.gather(*(c.incr("freq", "u1", expire=60) for c in (a, b) for _ in range(5)))
    assert await a.incr("freq", "u1", expire=60) == 11
    assert a.peek("freq", "u1") == 11
    # b's own copy is at most ttl old: it catches up from memcached.
    assert await eventually(lambda: b.peek("freq", "u1") == 11, timeout=3)
    # When its window ends in memcached, the count starts again (from the loader: none here).
    await a.incr("freq", "u2", expire=1)
    assert await eventually(lambda: a.peek("freq", "u2") == 0, timeout=5)


async def test_load_errors_raise_for_get_and_count(caches: MakeCache) -> None:
    cache: Cache = await caches()

    async def broken(key: str) -> Loaded[str]:
        raise ConnectionRefusedError("database down")

    cache.register("ns", broken, type=str, versioning="clock")
    await cache.start()
    with pytest.raises(LoadError, match="database down"):
        await cache.get("ns", "k")
    assert cache.peek("ns", "k") is None
    assert await eventually(
        lambda: metric(cache, "cache_load_errors_total", namespace="ns") >= 2, timeout=3
    )


async def test_memcached_killed_and_restarted_mid_test(
    caches: MakeCache, memcached_server: MemcachedProcess
) -> None:
    """With memcached gone the caches run on L1 + L3 (and say so); invalidations still flow on
    the bus; nothing stale comes back when it returns empty."""
    source = {"k": "v1"}
    loads: Loads = Counter()

    async def load(key: str) -> Loaded[str]:
        loads[key] += 1
        return Loaded(source.get(key, f"value-{key}"))

    a: Cache = await caches()
    b: Cache = await caches()
    for cache in (a, b):
        cache.register("ns", load, type=str, versioning="clock")
        await cache.start()
    assert await a.get("ns", "k") == "v1"
    assert await b.get("ns", "k") == "v1"
    memcached_server.kill()
    try:
        source["k"] = "v2"
        await a.invalidate("ns", "k")  # the tombstone cannot be written; the bus still works
        assert await eventually(lambda: b.peek("ns", "k") == "v2")
        assert await a.get("ns", "fresh") == "value-fresh"  # L3 without L2
        assert not a.l2_up
        assert metric(a, "cache_l2_up") == 0
        assert metric(a, "cache_l2_errors_total") >= 1
    finally:
        memcached_server.start()
    assert await eventually(lambda: a.l2_up and b.l2_up, timeout=5)
    assert metric(a, "cache_l2_up") == 1
    assert await a.get("ns", "k") == "v2"
    source["k"] = "v3"
    await a.invalidate("ns", "k")
    assert await eventually(lambda: b.peek("ns", "k") == "v3")


async def test_warm_loads_hot_keys_or_says_which_failed(caches: MakeCache) -> None:
    cache: Cache = await caches()
    loads: Loads = Counter()
    cache.register("ns", counting_loader(loads), type=str, versioning="clock", hot=("a", "b"))

    async def broken(key: str) -> Loaded[str]:
        raise RuntimeError("no")

    cache.register("bad", broken, type=str, versioning="clock", hot=("x",))
    await cache.start()
    assert await cache.warm(["ns"]) == 2
    assert cache.peek("ns", "a") == "value-a-1" and cache.peek("ns", "b") == "value-b-1"
    with pytest.raises(Exception, match="bad/x"):
        await cache.warm()
