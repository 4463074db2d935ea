"""The config watcher: Postgres ``config_changed`` notifications in, cache invalidations out.

Run one or more (``python -m cache watcher``); exactly one leads. Leadership is a session-level
advisory lock (``pg_try_advisory_lock``) held on a dedicated connection, which also LISTENs: if
the leader dies or loses Postgres, the lock and the subscription go together, and a standby
(trying every ``watcher_retry`` seconds) takes over.

For each batch of notifications the leader takes one fresh number from the config version
sequence and announces every affected key at that version: a tombstone in memcached, then an
``inv`` on the coherence bus. A stamp taken after the commit is above every version any load
that missed the change could carry, even when concurrent transactions commit out of sequence
order (see cache.versions). On taking the lead — at start, after a failover or a reconnect —
it cannot know what was committed while nobody listened, so it flushes every namespace its key
map names (a namespace floor in memcached and a ``flush`` on the bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from cache.app import default_origin
from cache.changes import (
    CONFIG_CHANNEL,
    KeyMap,
    batch_keys,
    default_keys,
    namespaces_of,
    parse_change,
)
from cache.codec import Message, Record
from cache.errors import CodecError, L2Unavailable, WatcherError
from cache.memcache import L2, MAX_RELATIVE_EXPIRE
from cache.settings import CacheSettings
from fleet.db.leadership import lead_while_locked

if TYPE_CHECKING:
    from cache.coherence import CoherenceBus

log = logging.getLogger("cache.watcher")


class WatcherMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.leader = Gauge(
            "cache_watcher_leader", "1 while this watcher holds the lead", registry=registry
        )
        self.takeovers = Counter(
            "cache_watcher_takeovers_total", "Times this watcher took the lead", registry=registry
        )
        self.changes = Counter(
            "cache_watcher_changes_total", "config_changed notifications handled", registry=registry
        )
        self.invalidations = Counter(
            "cache_watcher_invalidations_total", "Keys invalidated", registry=registry
        )
        self.errors = Counter(
            "cache_watcher_errors_total",
            "Connection losses and undecodable notifications",
            registry=registry,
        )


class Watcher:
    """One watcher process's loop; see the module doc. ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: CacheSettings,
        *,
        key_map: KeyMap = default_keys,
        registry: CollectorRegistry | None = None,
        origin: str | None = None,
        on_leader: Callable[[bool], None] | None = None,
    ) -> None:
        if not settings.fleet.pg_dsn:
            raise WatcherError("RTBFLEET_PG_DSN: the config watcher needs a Postgres DSN")
        self.settings = settings
        self.key_map = key_map
        self.origin = origin or default_origin("watcher")
        self.registry = registry
        self.metrics = WatcherMetrics(registry)
        self.on_leader = on_leader
        self.is_leader = False
        self._bus: CoherenceBus | None = None
        self._l2: L2 | None = None
        self.announced = 0  # keys announced since start

    async def run(self, stop: asyncio.Event) -> None:
        from cache.coherence import PING_TOPIC, CoherenceBus

        s = self.settings
        self._bus = CoherenceBus(
            s.fleet.coherence_bus_in,
            s.fleet.coherence_bus_out,
            origin=self.origin,
            heartbeat_timeout=s.heartbeat_timeout,
            on_message=lambda *_: None,
            on_gap=lambda *_: None,
            on_silent=lambda *_: None,
            prefixes=(PING_TOPIC,),  # only to hear its own pings: the bus is live
            registry=self.registry,
        )
        servers = s.fleet.memcached_servers
        try:
            await self._bus.start()
            if servers:
                self._l2 = L2(
                    servers,
                    prefix=s.l2_prefix,
                    pool_size=2,
                    timeout=s.l2_timeout,
                    retry=s.l2_retry,
                )
                await self._l2.start()
            while not stop.is_set():
                await self._session(stop)
                if not stop.is_set():
                    await _wait(stop, s.watcher_retry)
        finally:
            self._set_leader(False)
            if self._l2 is not None:
                await self._l2.close()
            await self._bus.close()

    async def _session(self, stop: asyncio.Event) -> None:
        """One Postgres connection: wait for the lock, then lead until the connection is lost."""
        s = self.settings

        def failed(what: str, exc: BaseException) -> None:
            log.warning("watcher %s: %r", what, exc)
            self.metrics.errors.inc()

        try:
            await lead_while_locked(
                s.fleet.pg_dsn,
                s.watcher_lock_key,
                application_name=f"rtbfleet-cache-watcher-{os.getpid()}",
                retry=s.watcher_retry,
                stop=stop,
                lead=self._lead,
                on_error=failed,
            )
        finally:
            self._set_leader(False)

    async def _lead(
        self, conn: asyncpg.Connection, stop: asyncio.Event, lost: asyncio.Event
    ) -> None:
        s = self.settings
        queue: asyncio.Queue[str] = asyncio.Queue()

        def heard(_c: object, _pid: int, _channel: str, payload: object) -> None:
            queue.put_nowait(str(payload))

        await conn.add_listener(CONFIG_CHANNEL, heard)
        assert self._bus is not None
        await self._bus.wait_ready(s.heartbeat_timeout)
        self._set_leader(True)
        self.metrics.takeovers.inc()
        log.info("watcher %s leads: listening on %s", self.origin, CONFIG_CHANNEL)
        await self._flush_all(conn)
        while not stop.is_set() and not lost.is_set():
            try:
                first = await asyncio.wait_for(queue.get(), s.watcher_retry)
            except TimeoutError:
                await conn.fetchval("SELECT 1")  # notice a dead connection between changes
                continue
            payloads = [first]
            while not queue.empty():
                payloads.append(queue.get_nowait())
            await self._announce(conn, payloads)

    async def _stamp(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT nextval('config_version_seq')"))

    async def _announce(self, conn: asyncpg.Connection, payloads: list[str]) -> None:
        changes = []
        for payload in payloads:
            try:
                changes.append(parse_change(payload))
            except CodecError as exc:
                self.metrics.errors.inc()
                log.warning("ignoring a notification: %s", exc)
        self.metrics.changes.inc(len(changes))
        if not changes:
            return
        keys = batch_keys(changes, self.key_map)
        version = await self._stamp(conn)
        assert self._bus is not None
        s = self.settings
        if self._l2 is not None:
            # Tombstones first: a process that misses the announcement still finds them.
            tombstone = Record(version=version, loaded_at=time.time())
            expire = s.default_ttl + s.max_stale
            l2 = self._l2

            async def bury(namespace: str, key: str) -> None:
                with contextlib.suppress(L2Unavailable):
                    await l2.write_if_newer(namespace, key, tombstone, expire)

            await asyncio.gather(*(bury(namespace, key) for namespace, key in keys))
        for namespace, key in keys:
            self._bus.publish(Message("inv", namespace, key, version, self.origin))
        self.metrics.invalidations.inc(len(keys))
        self.announced += len(keys)

    async def _flush_all(self, conn: asyncpg.Connection) -> None:
        version = await self._stamp(conn)
        assert self._bus is not None
        for namespace in namespaces_of(self.key_map):
            if self._l2 is not None:
                with contextlib.suppress(L2Unavailable):
                    await self._l2.raise_floor(namespace, version, MAX_RELATIVE_EXPIRE)
            self._bus.publish(Message("flush", namespace, "", version, self.origin))

    def _set_leader(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            self.metrics.leader.set(1 if leading else 0)
            if self.on_leader is not None:
                self.on_leader(leading)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_watcher(
    settings: CacheSettings,
    *,
    stop: asyncio.Event,
    key_map: KeyMap = default_keys,
    registry: CollectorRegistry | None = None,
    origin: str | None = None,
    on_leader: Callable[[bool], None] | None = None,
) -> None:
    """Run a config watcher until ``stop`` is set (see the module doc)."""
    watcher = Watcher(
        settings, key_map=key_map, registry=registry, origin=origin, on_leader=on_leader
    )
    await watcher.run(stop)
