"""What the coherence bus must never let through: a lost invalidation (a sequence gap), a
silent or restarted publisher, a stale fill after a newer invalidation. A hand-made publisher
(the Injector) speaks the bus wire format through a real proxy process to a real cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from conftest_cache import Injector, bus, cache_settings, eventually
from prometheus_client import CollectorRegistry

from cache.app import Cache
from cache.codec import Message, Record
from cache.memcache import L2
from cache.namespace import Loaded

__all__ = ["bus"]


class Source:
    """The truth behind namespace ``bench``; records what the cache did."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.gate: asyncio.Event | None = None
        self.events: list[tuple[str, str]] = []

    async def load(self, key: str) -> Loaded[str]:
        if self.gate is not None:
            await self.gate.wait()
        return Loaded(self.values.get(key, f"value-{key}"))

    def told(self, event: str, key: str, version: int) -> None:
        self.events.append((event, key))


@pytest.fixture
async def setup(
    memcached: tuple[str, int], bus: tuple[str, str]
) -> AsyncIterator[tuple[Cache, Source, Injector, L2]]:
    source = Source()
    cache = Cache(cache_settings(memcached, bus), registry=CollectorRegistry())
    region = cache.register("bench", source.load, type=str, versioning="clock")
    region.add_listener(source.told)
    injector = Injector(bus[0])
    l2 = L2([memcached], prefix=cache.settings.l2_prefix)
    try:
        await cache.start()
        await l2.start()
        await injector.wait_subscribed()
        yield cache, source, injector, l2
    finally:
        injector.close()
        await l2.close()
        await cache.close()


def sample(cache: Cache, name: str, **labels: str) -> float:
    assert cache.registry is not None
    return cache.registry.get_sample_value(name, labels) or 0.0


def version_now(ahead: float = 0.0) -> int:
    return int((time.time() + ahead) * 1e6)


async def test_lost_invalidation_ends_in_a_flush_not_a_stale_read(
    setup: tuple[Cache, Source, Injector, L2],
) -> None:
    cache, source, injector, l2 = setup
    source.values["k1"] = "v1"
    await cache.warm({"bench": ["k1", "k2"]})
    injector.send(Message("inv", "bench", "other", version_now(), "injector"))
    assert await eventually(
        lambda: sample(cache, "cache_bus_messages_total", direction="received", op="inv") == 1
    )
    # k1 changes; its publisher writes the tombstone to L2 and announces it, but the
    # announcement is lost on the way.
    source.values["k1"] = "v2"
    version = version_now()
    await l2.write_if_newer("bench", "k1", Record(version=version, loaded_at=time.time()), 60)
    injector.skip("bench")
    assert cache.peek("bench", "k1") == "v1"  # nothing says otherwise yet
    injector.send(Message("inv", "bench", "other2", version_now(), "injector"))
    # The next message reveals the gap: the namespace is flushed and k1 reloaded.
    assert await eventually(lambda: ("flushed", "") in source.events)
    assert sample(cache, "cache_flushes_total", namespace="bench", reason="gap") == 1
    assert sample(cache, "cache_bus_gaps_total") == 1
    assert await cache.get("bench", "k1") == "v2"
    assert cache.peek("bench", "k1") == "v2"


async def test_stale_fill_after_newer_invalidation_is_refused(
    setup: tuple[Cache, Source, Injector, L2],
) -> None:
    cache, source, injector, _ = setup
    source.values["k"] = "old"
    await cache.warm({"bench": ["k"]})
    cache.peek("bench", "k")  # in use: it is refilled as soon as it is dropped
    held = cache.region("bench").store.entries["k"].version
    source.gate = asyncio.Event()  # hold the refill so that the fills below find it waiting
    source.values["k"] = "fresh"
    inv = version_now(ahead=10)
    injector.send(Message("inv", "bench", "k", inv, "injector"))
    assert await eventually(lambda: ("dropped", "k") in source.events)
    # A fill of the old value, loaded before the invalidation, arrives after it.
    stale = Record(version=held, loaded_at=time.time(), payload=b"\xa5stale")
    injector.send(Message("fill", "bench", "k", held, "injector", stale))
    assert await eventually(lambda: cache.region("bench").store.refused >= 1)
    assert cache.peek("bench", "k") is None
    assert sample(cache, "cache_fills_refused_total", namespace="bench") >= 1
    # One loaded after it is taken (the process was waiting for it).
    newer = Record(version=inv + 1, loaded_at=time.time(), payload=b"\xa5fresh")
    injector.send(Message("fill", "bench", "k", inv + 1, "injector", newer))
    assert await eventually(lambda: cache.peek("bench", "k") == "fresh")
    source.gate.set()
    await asyncio.sleep(0.05)
    assert cache.peek("bench", "k") == "fresh"
    assert ("stored", "k") in source.events


async def test_silent_publisher_flushes_what_it_published_on(
    setup: tuple[Cache, Source, Injector, L2],
) -> None:
    cache, source, injector, _ = setup
    await cache.warm({"bench": ["a", "b"]})
    injector.send(Message("inv", "bench", "zzz", version_now(), "injector"))
    # No heartbeats follow: after the timeout (1 s here) its tail may be lost.
    assert await eventually(lambda: ("flushed", "") in source.events, timeout=5)
    assert sample(cache, "cache_flushes_total", namespace="bench", reason="silent") == 1
    assert sample(cache, "cache_bus_silent_publishers_total") == 1
    assert "a" not in cache.region("bench").store


async def test_restarted_publisher_flushes_its_old_life(
    setup: tuple[Cache, Source, Injector, L2],
) -> None:
    cache, source, injector, _ = setup
    await cache.warm({"bench": ["a"]})
    injector.send(Message("inv", "bench", "zzz", version_now(), "injector"))
    assert await eventually(
        lambda: sample(cache, "cache_bus_messages_total", direction="received", op="inv") == 1
    )
    assert ("flushed", "") not in source.events
    injector.restart()
    injector.send(Message("inv", "bench", "yyy", version_now(), "injector"))
    assert await eventually(lambda: ("flushed", "") in source.events)
    assert sample(cache, "cache_flushes_total", namespace="bench", reason="silent") == 1
    assert sample(cache, "cache_bus_gaps_total") == 0
