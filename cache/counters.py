"""Counter namespaces: integers counted fleet-wide with memcached's atomic ``incr``.

A count only grows within its window (the key's life in memcached), so the count is its own
version: a process's copy is replaced by any higher count it hears of. When memcached no longer
holds the key, its window is over (or memcached restarted) and the count starts again from the
loader's value (0 without a loader). With memcached down, a process counts on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cache.errors import L2Unavailable, LoadError
from cache.region import Region
from cache.store import Offer


class CounterRegion(Region[int]):
    """A region of counters (``Namespace(counter=True)``); see the module doc."""

    async def _fill(self, key: str) -> int | None:
        sv = self.services
        t0 = sv.mono()
        if self.shared:
            assert sv.l2 is not None
            got: dict[str, int] | None = None
            with contextlib.suppress(L2Unavailable):
                got = await sv.l2.counter_get(self.name, [key])
            if got is not None and key in got:
                self.counts.l2_hits += 1
                sv.metrics.observe_fill("l2", self.name, sv.mono() - t0)
                return self._offer_count(key, got[key])
            if got is not None:
                self.counts.l2_misses += 1
                self.store.discard(key)  # the window is over: the count starts again
        count = 0
        if self.namespace.loader is not None:
            try:
                async with asyncio.timeout(sv.settings.load_timeout):
                    loaded = await self.namespace.loader(key)
            except Exception as exc:
                self.counts.load_errors += 1
                raise LoadError(self.name, key, f"{type(exc).__name__}: {exc}") from exc
            raw: Any = loaded.value
            count = int(raw or 0)
            self.counts.l3_loads += 1
            if count > 0 and self.shared and sv.l2 is not None:
                with contextlib.suppress(L2Unavailable):
                    count = await sv.l2.counter_seed(self.name, key, count, self.ttl)
        sv.metrics.observe_fill("l3", self.name, sv.mono() - t0)
        return self._offer_count(key, count)

    def _offer_count(self, key: str, count: int) -> int:
        outcome = self.store.offer(key, count, count, self.services.mono())
        if outcome is Offer.STORED and self._listeners:
            self._tell("stored", key, count)
        if outcome is Offer.NOT_NEWER:
            e = self.store.entries.get(key)
            if e is not None:
                return int(e.value)
        return count

    async def incr(self, key: str, delta: int = 1, expire: float | None = None) -> int:
        """Add ``delta`` to a counter fleet-wide (memcached ``incr``); the new count. ``expire``:
        seconds the counter lives in memcached from its first increment (default: the ttl).
        With memcached down, counts in this process only."""
        if delta < 0:
            raise ValueError("counters only grow")
        sv = self.services
        count: int | None = None
        if self.shared:
            assert sv.l2 is not None
            with contextlib.suppress(L2Unavailable):
                count = await sv.l2.counter_add(self.name, key, delta, expire or self.ttl)
        if count is None:
            e = self.store.entries.get(key)
            count = (int(e.value) if e is not None else 0) + delta
        self._offer_count(key, count)
        return count

    async def put(self, key: str, value: int, version: int | None = None) -> int:
        raise TypeError(f"use incr() on the counter namespace {self.name!r}")

    async def invalidate(self, key: str, version: int | None = None) -> int:
        raise TypeError(f"counters are not invalidated ({self.name!r}); they expire")
