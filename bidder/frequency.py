"""Frequency-cap counters from memcached.

The key layout is the kernel's (``fleet.frequency.counter_key``): the tracker writes the
counters, with an expiry that ends the cap period after the first impression. They stay out of
the cache's counter namespaces on purpose: a reader here fails closed (a failed read caches
nothing, so a capped campaign is skipped), where a cache counter reads an unreachable memcached
as a count of 0.

``MemcachedFrequency`` reads counters through an in-process L1. An L1 miss returns None at once
(the pipeline skips a capped campaign rather than wait) and schedules a batched read in a
bounded thread pool: pymemcache blocks, so it never runs on the event loop's thread. Counters
are written by whoever counts impressions (the tracker) under ``counter_key``.

A counter read some time ago does not know the impressions this process has bid for since: a
user who comes back before the tracker counts them (or before the L1 reads the counter again)
would be shown a capped campaign once more per request. So the reader also counts its own bids
(``bid``): ``impressions`` is the counter plus this process's bids on that campaign for that user
made since ``bid_window`` seconds before the counter was read. The window covers the notices
still on their way when it was read; a bid it holds that lost, or whose impression the counter
already has, is counted twice for at most ``bid_window`` + ``ttl`` seconds: the cap then holds
a little early, never late. Bids through other bidder processes are not seen here: across
processes a user can exceed a cap by the bids made within one counter's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bidder.metrics import BidderMetrics
from fleet.frequency import counter_key

log = logging.getLogger("bidder.frequency")


class NoFrequencyData:
    """No memcached configured: every counter is unknown (capped campaigns are skipped)."""

    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        return None

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        return None


class MemcachedFrequency:
    """Frequency counters through an in-process L1; misses are filled in batches off the loop.

    A counter is fresh for ``ttl`` seconds, then served stale for another ``ttl`` while it is
    read again (so a busy user is never unknown), then forgotten.

    ``client`` is anything with pymemcache's ``get_many(keys) -> dict`` (thread-safe: a pooled
    client). Keys not in memcached are users never counted: 0. A failed read caches nothing
    (the campaign stays skipped for that user) and pauses fills for ``error_backoff`` seconds.
    """

    def __init__(
        self,
        client: Any,
        *,
        metrics: BidderMetrics,
        ttl: float = 30.0,
        threads: int = 2,
        max_pending: int = 10_000,
        max_entries: int = 200_000,
        batch: int = 100,
        error_backoff: float = 1.0,
        bid_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.ttl = ttl
        self.threads = threads
        self.max_pending = max_pending
        self.max_entries = max_entries
        self.batch = batch
        self.error_backoff = error_backoff
        self.bid_window = bid_window
        self._clock = clock
        # key -> (count, fresh until, read started)
        self._l1: dict[str, tuple[int, float, float]] = {}
        self._bids: dict[str, list[float]] = {}  # key -> times of this process's own bids
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._reading: set[str] = set()
        self._batches = 0
        self._paused_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="memcached")
        self._kick_scheduled = False
        self._inflight: set[asyncio.Future[dict[str, Any]]] = set()
        hit, miss, dropped = (metrics.frequency.labels(r) for r in ("hit", "miss", "dropped"))
        self._hit, self._miss, self._dropped = hit, miss, dropped

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        key = counter_key(campaign_id, period_seconds, user_key)
        entry = self._l1.get(key)
        if entry is not None:
            now = self._clock()
            if now < entry[1]:
                self._hit.inc()
                return entry[0] + self._own_bids(key, entry[2])
            if now < entry[1] + self.ttl:  # stale: still served while it is read again
                self._hit.inc()
                self._schedule(key)
                return entry[0] + self._own_bids(key, entry[2])
        self._miss.inc()
        self._schedule(key)
        return None

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        """This process bid on the campaign for the user: count it against each cap period
        until a counter read well after it holds it."""
        now = self._clock()
        bids = self._bids
        if len(bids) >= self.max_entries:
            for old in list(bids)[: max(1, len(bids) // 10)]:  # the oldest tenth
                del bids[old]
        for period in periods:
            key = counter_key(campaign_id, period, user_key)
            times = bids.get(key)
            if times is None:
                bids[key] = [now]
            else:
                times.append(now)

    def _own_bids(self, key: str, read_started: float) -> int:
        times = self._bids.get(key)
        if not times:
            return 0
        since = read_started - self.bid_window
        return sum(1 for t in times if t >= since)

    def _schedule(self, key: str) -> None:
        if key in self._pending or key in self._reading:
            return
        if len(self._pending) >= self.max_pending or self._loop is None:
            self._dropped.inc()
            return
        self._pending[key] = None
        if not self._kick_scheduled:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        loop = self._loop
        if loop is None:
            return
        if self._clock() < self._paused_until:
            self._dropped.inc(len(self._pending))
            self._pending.clear()
            return
        while self._pending and self._batches < self.threads:
            keys = []
            for key in self._pending:
                keys.append(key)
                if len(keys) >= self.batch:
                    break
            for key in keys:
                del self._pending[key]
                self._reading.add(key)
            self._batches += 1
            future = loop.run_in_executor(self._executor, self._read, keys)
            self._inflight.add(future)
            future.add_done_callback(
                functools.partial(self._filled, keys=keys, started=self._clock())
            )

    def _read(self, keys: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get_many(keys)
        return result

    def _filled(
        self, future: asyncio.Future[dict[str, Any]], *, keys: list[str], started: float
    ) -> None:
        self._inflight.discard(future)
        self._batches -= 1
        self._reading.difference_update(keys)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.metrics.frequency.labels("fill_error").inc()
            self._paused_until = self._clock() + self.error_backoff
            log.debug("memcached read failed: %s", exc)
        else:
            values = future.result()
            expires = self._clock() + self.ttl
            if len(self._l1) + len(keys) > self.max_entries:
                self._evict(len(keys))
            since = started - self.bid_window
            bids = self._bids
            for key in keys:
                self._l1[key] = (_count(values.get(key)), expires, started)
                times = bids.get(key)
                if times is not None:  # bids the counter surely holds now are not counted again
                    kept = [t for t in times if t >= since]
                    if kept:
                        bids[key] = kept
                    else:
                        del bids[key]
            self.metrics.frequency.labels("filled").inc(len(keys))
        if self._pending and not self._kick_scheduled and self._loop is not None:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)

    def _evict(self, room: int) -> None:
        """Drop the oldest tenth (insertion order) and anything expired found on the way."""
        now = self._clock()
        drop = max(room, len(self._l1) // 10)
        for key in list(self._l1)[:drop]:
            del self._l1[key]
        for key in [k for k, (_, fresh, _) in self._l1.items() if fresh + self.ttl <= now]:
            del self._l1[key]
        for key in [k for k, times in self._bids.items() if times[-1] + self.bid_window <= now]:
            if key not in self._l1:
                del self._bids[key]

    async def close(self) -> None:
        self._loop = None
        self._pending.clear()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=2.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.client.close()


def _count(raw: Any) -> int:
    if raw is None:
        return 0
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 2**31  # not a counter: treat the cap as reached rather than ignore it


class ShardedMemcached:
    """``get_many`` over one or more memcached servers, keys placed as pymemcache's HashClient
    places them (rendezvous hashing on ``host:port``), so that writers using HashClient and this
    reader agree. Unlike HashClient, a server that fails raises instead of answering "no such
    keys" (which would read as zero impressions and let a capped campaign through)."""

    def __init__(self, servers: Sequence[tuple[str, int]], pool_size: int) -> None:
        from pymemcache.client.base import PooledClient
        from pymemcache.client.rendezvous import RendezvousHash

        names = [f"{host}:{port}" for host, port in servers]
        self._hash = RendezvousHash(names)
        self._clients = {
            name: PooledClient(
                server,
                max_pool_size=pool_size,
                connect_timeout=0.25,
                timeout=0.25,
                no_delay=True,
            )
            for name, server in zip(names, servers, strict=True)
        }

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        by_server: dict[str, list[str]] = {}
        for key in keys:
            by_server.setdefault(self._hash.get_node(key), []).append(key)
        found: dict[str, Any] = {}
        for name, batch in by_server.items():
            found.update(self._clients[name].get_many(batch))
        return found

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def memcached_client(servers: Sequence[tuple[str, int]], pool_size: int) -> ShardedMemcached:
    return ShardedMemcached(servers, pool_size)
