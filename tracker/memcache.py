"""memcached: frequency-cap counters, incremented off the event loop (pymemcache blocks).

On a transaction's first impression (or its billing when no pixel fires), each frequency cap of
the campaign gets its counter (``fleet.frequency.counter_key``) incremented: ``add`` with a
TTL of the cap period (so the window starts at the first impression), then ``incr``. Increments
run in a bounded thread pool; past ``max_pending`` waiting ones they are dropped and counted. A
failed increment is counted, not retried (a counter is a cap, not money). A period is fleet
time; memcached expires in real seconds (``fleet.frequency.memcached_expiry`` with the fleet
clock's scale).

Keys are placed on servers by rendezvous hashing on ``host:port`` (pymemcache's HashClient), as
the bidder's reader places them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fleet.frequency import counter_key, memcached_expiry, period_end
from tracker.metrics import TrackerMetrics

log = logging.getLogger("tracker.memcache")


def hash_client(servers: Sequence[tuple[str, int]], pool_size: int) -> Any:
    from pymemcache.client.hash import HashClient

    return HashClient(
        list(servers),
        use_pooling=True,
        max_pool_size=pool_size,
        connect_timeout=0.5,
        timeout=0.5,
        no_delay=True,
        ignore_exc=False,
        retry_attempts=1,
        dead_timeout=1,
    )


class FrequencyWriter:
    """``increment(user_key, caps)`` schedules the counters of one impression; never blocks."""

    def __init__(
        self,
        client: Any,
        metrics: TrackerMetrics,
        *,
        threads: int = 2,
        max_pending: int = 10_000,
        time_scale: float = 1.0,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be greater than 0")
        self.client = client
        self.time_scale = time_scale
        self.metrics = metrics
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tracker-memcached")
        self._pending = 0
        self._lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._done = metrics.frequency.labels("done")
        self._failed = metrics.frequency.labels("failed")
        self._dropped = metrics.frequency.labels("dropped")

    def increment(self, user_key: str, caps: Sequence[tuple[int, int]]) -> None:
        """``caps``: (campaign id, period seconds) of each cap to count this impression in."""
        if not caps:
            return
        with self._lock:
            if self._pending >= self.max_pending:
                self._dropped.inc(len(caps))
                return
            self._pending += 1
        keys = [(counter_key(cid, period, user_key), period) for cid, period in caps]
        future = self._executor.submit(self._write, keys)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
            self._pending -= 1

    def _write(self, keys: list[tuple[str, int]]) -> None:
        for key, period in keys:
            expire = memcached_expiry(
                0.0, period_end(0.0, period), unix_now=time.time(), time_scale=self.time_scale
            )
            try:
                self.client.add(key, b"0", expire=expire, noreply=False)
                self.client.incr(key, 1)
            except Exception as exc:  # any client or socket error: counted, never raised
                self._failed.inc()
                log.debug("frequency increment of %s failed: %s", key, exc)
            else:
                self._done.inc()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until the increments scheduled so far are done (tests, shutdown)."""
        with self._lock:
            futures = list(self._futures)
        pending = [asyncio.wrap_future(f) for f in futures]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def close(self) -> None:
        await self.drain()
        self._executor.shutdown(wait=False, cancel_futures=True)
        try:
            self.client.close()
        except Exception as exc:  # closing a dead connection
            log.debug("memcached close: %s", exc)
