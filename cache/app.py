"""The cache a process uses: namespaces registered with their loaders, three tiers, coherence.

    cache = Cache(CacheSettings.from_env(), registry=registry)
    config = cache.register("config", snapshot_loader(pool), type=ConfigSnapshot, hot=("snapshot",))
    await cache.start()
    await cache.warm()                      # hot keys loaded before the process says it is ready
    snapshot = config.peek("snapshot")      # the bid path: L1 or None, never waits
    caps = await cache.get("freq", user)    # off the hot path: waits for the fill
    await cache.close()

One background tick (``settings.tick``) is the coarse clock: it expires and refreshes L1 entries,
so a hit reads no clock. The coherence bus (``co.cache.<namespace>``) carries invalidations,
namespace flushes and fills; a gap in a publisher's sequence or its silence flushes the
namespaces it published on, since an invalidation may have been lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from cache.codec import Message, namespace_of_topic
from cache.counters import CounterRegion
from cache.errors import CacheError, UnknownNamespace, WarmError
from cache.memcache import L2
from cache.metrics import CacheMetrics, NamespaceView
from cache.namespace import Loader, Namespace
from cache.region import Region, Services
from cache.settings import CacheSettings
from cache.versions import Versioning

if TYPE_CHECKING:
    from cache.coherence import CoherenceBus

log = logging.getLogger("cache")

T = TypeVar("T")


def default_origin(role: str = "cache") -> str:
    """A publisher id unique to this process incarnation: host, pid and a random tag."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Cache:
    """See the module doc. ``start()`` before use, ``close()`` at the end (idempotent)."""

    def __init__(
        self,
        settings: CacheSettings,
        *,
        registry: CollectorRegistry | None = None,
        origin: str | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.origin = origin or default_origin()
        self._regions: dict[str, Region[Any]] = {}
        self._peeks: dict[str, Callable[[str], Any]] = {}
        self.metrics = CacheMetrics(registry, self._views, self._l2_state)
        self.services = Services(settings, self.metrics, self.origin, wall, mono)
        self._l2: L2 | None = None
        self._bus: CoherenceBus | None = None
        self._tick: asyncio.Task[None] | None = None
        self._state = "new"

    # -- namespaces ---------------------------------------------------------------------------
    def register(
        self,
        namespace: str | Namespace[T],
        loader: Loader[T] | None = None,
        *,
        type: Any = Any,
        ttl: float | None = None,
        max_stale: float | None = None,
        max_entries: int | None = None,
        hot: Iterable[str] = (),
        versioning: Versioning = "source",
        shared: bool = True,
        broadcast: bool = True,
        counter: bool = False,
    ) -> Region[T]:
        """Add a namespace (a :class:`Namespace`, or its name and options); returns its region,
        whose ``peek``/``get`` skip the namespace lookup."""
        if isinstance(namespace, str):
            namespace = Namespace(
                namespace,
                loader,
                type=type,
                ttl=ttl,
                max_stale=max_stale,
                max_entries=max_entries,
                hot=tuple(hot),
                versioning=versioning,
                shared=shared,
                broadcast=broadcast,
                counter=counter,
            )
        if namespace.name in self._regions:
            raise ValueError(f"cache namespace {namespace.name!r} is already registered")
        region: Region[T]
        if namespace.counter:
            region = CounterRegion(namespace, self.services)  # type: ignore[arg-type,assignment]
        else:
            region = Region(namespace, self.services)
        self._regions[namespace.name] = region
        self._peeks[namespace.name] = region.peek
        if self._state == "running":
            region.start()
        return region

    def region(self, namespace: str) -> Region[Any]:
        try:
            return self._regions[namespace]
        except KeyError:
            raise UnknownNamespace(namespace) from None

    @property
    def namespaces(self) -> list[str]:
        return list(self._regions)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect L2 (a memcached that is down is retried in the background) and the bus."""
        if self._state != "new":
            raise CacheError("a Cache starts once")
        self._state = "starting"
        s = self.settings
        self.services.loop = asyncio.get_running_loop()
        servers = s.fleet.memcached_servers
        try:
            if servers:
                self._l2 = L2(
                    servers,
                    prefix=s.l2_prefix,
                    pool_size=s.l2_pool_size,
                    timeout=s.l2_timeout,
                    retry=s.l2_retry,
                    value_max_bytes=s.l2_value_max_bytes,
                )
                await self._l2.start()
                self.services.l2 = self._l2
            if s.bus:
                from cache.coherence import CoherenceBus  # pyzmq only for processes on the bus

                self._bus = CoherenceBus(
                    s.fleet.coherence_bus_in,
                    s.fleet.coherence_bus_out,
                    origin=self.origin,
                    heartbeat_timeout=s.heartbeat_timeout,
                    on_message=self._on_message,
                    on_gap=self._on_gap,
                    on_silent=self._on_silent,
                    registry=self.registry,
                )
                await self._bus.start()
                self.services.publish = self._publish
                if not await self._bus.wait_ready(s.heartbeat_timeout):
                    log.warning("coherence bus %s is not answering yet", s.fleet.coherence_bus_out)
        except BaseException:
            await self.close()
            raise
        for region in self._regions.values():
            region.start()
        self._tick = asyncio.get_running_loop().create_task(self._tick_loop(), name="cache-tick")
        self._state = "running"

    async def close(self) -> None:
        """Stop the tick and every fill, then close the bus and memcached."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        for region in self._regions.values():
            await region.close()
        self.services.publish = None
        if self._bus is not None:
            await self._bus.close()
        if self._l2 is not None:
            await self._l2.close()

    async def __aenter__(self) -> Cache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def l2_up(self) -> bool:
        return self._l2 is not None and self._l2.up

    # -- the API --------------------------------------------------------------------------------
    def peek(self, namespace: str, key: str) -> Any:
        """The L1 value or None, at once; a miss schedules a fill. For the bid path."""
        try:
            peek = self._peeks[namespace]
        except KeyError:
            raise UnknownNamespace(namespace) from None
        return peek(key)

    async def get(self, namespace: str, key: str) -> Any:
        """The value, waiting for a fill on a miss; raises LoadError when L3 fails."""
        return await self.region(namespace).get(key)

    async def put(self, namespace: str, key: str, value: Any, version: int | None = None) -> int:
        return await self.region(namespace).put(key, value, version)

    async def invalidate(self, namespace: str, key: str, version: int | None = None) -> int:
        return await self.region(namespace).invalidate(key, version)

    async def invalidate_all(self, namespace: str, version: int | None = None) -> int:
        return await self.region(namespace).invalidate_all(version)

    async def incr(
        self, namespace: str, key: str, delta: int = 1, expire: float | None = None
    ) -> int:
        return await self.region(namespace).incr(key, delta, expire)

    async def warm(
        self,
        namespaces: Iterable[str] | Mapping[str, Iterable[str]] | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Load keys before the process reports ready: every hot key of ``namespaces`` (all
        namespaces when None), or the keys given per namespace. Returns how many were loaded;
        raises WarmError naming what could not be."""
        if isinstance(namespaces, Mapping):
            wanted = {ns: list(keys) for ns, keys in namespaces.items()}
        else:
            names = list(self._regions) if namespaces is None else list(namespaces)
            wanted = {ns: list(self.region(ns).namespace.hot) for ns in names}
        jobs = [(ns, key) for ns, keys in wanted.items() for key in keys]
        limit = timeout if timeout is not None else self.settings.load_timeout * 2
        results: list[Any] = []
        try:
            async with asyncio.timeout(limit):
                results = await asyncio.gather(
                    *(self.region(ns).get(key) for ns, key in jobs), return_exceptions=True
                )
        except TimeoutError:
            failed = {
                f"{ns}/{key}": "timed out" for ns, key in jobs if key not in self.region(ns).store
            }
            raise WarmError(failed) from None
        failed = {
            f"{ns}/{key}": str(r)
            for (ns, key), r in zip(jobs, results, strict=True)
            if isinstance(r, BaseException)
        }
        if failed:
            raise WarmError(failed)
        return len(jobs)

    # -- internals ----------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        tick = self.settings.tick
        mono = self.services.mono
        while True:
            await asyncio.sleep(tick)
            now = mono()
            for region in self._regions.values():
                for key in region.store.sweep(now):
                    region.refresh(key)

    def _publish(self, message: Message) -> None:
        if self._bus is not None:
            self._bus.publish(message)
            sent = self.metrics.bus.sent
            sent[message.op] = sent.get(message.op, 0) + 1

    def _on_message(self, publisher_id: str, topic: str, message: Message) -> None:
        received = self.metrics.bus.received
        received[message.op] = received.get(message.op, 0) + 1
        if message.origin == self.origin:
            return
        region = self._regions.get(message.namespace)
        if region is None:
            return
        if message.op == "inv":
            region.apply_invalidation(message.key, message.version, "bus")
        elif message.op == "flush":
            region.apply_flush(message.version)
        elif message.op == "fill":
            region.apply_fill(message.key, message.version, message.record)

    def _on_gap(self, publisher_id: str, topic: str) -> None:
        """A message from ``publisher_id`` on ``topic`` was lost: flush that namespace."""
        self.metrics.bus.gaps += 1
        namespace = namespace_of_topic(topic)
        if namespace is None:
            targets = list(self._regions)  # not a cache topic: trust nothing
        elif namespace in self._regions:
            targets = [namespace]
        else:
            return  # a namespace this process does not hold (or the pings)
        log.warning("coherence gap from %s on %s: flushing %s", publisher_id, topic, targets)
        for name in targets:
            self._regions[name].apply_flush(None, "gap")

    def _on_silent(self, publisher_id: str, topics: set[str]) -> None:
        """``publisher_id`` went silent: flush what it published on (its tail may be lost)."""
        self.metrics.bus.silent += 1
        heard = {namespace_of_topic(t) for t in topics}
        targets = [ns for ns in self._regions if ns in heard]
        if targets:
            log.warning("coherence publisher %s is silent: flushing %s", publisher_id, targets)
        for name in targets:
            self._regions[name].apply_flush(None, "silent")

    def _views(self) -> list[NamespaceView]:
        return [r.view() for r in self._regions.values()]

    def _l2_state(self) -> tuple[bool, int] | None:
        if self._l2 is None:
            return None
        return self._l2.up, self._l2.errors
