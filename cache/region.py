"""One registered namespace at work: its L1 store, its fills through L2 and L3, its share of the
coherence bus. ``Cache`` owns the regions and the things they share (:class:`Services`).

A fill (one task per key per process, however many callers miss) goes:

1. L2: a record at least as new as everything known (floor) and younger than the ttl is used.
   A tombstone or a namespace floor found there raises what is known.
2. The lease: ``add`` of the key's lease in memcached. Whoever gets it reads L2 once more (the
   previous holder may have stored the value and let go since step 1) and loads; the others
   wait for the ``fill`` announcement on the bus, polling L2 meanwhile, until the value is there
   or the lease is gone (the holder failed or died), and then try again.
3. L3: the loader, under ``load_timeout``. The value is stamped with at least the highest version
   known when the load started (see cache.versions), offered to L1 — refused if an invalidation
   arrived meanwhile, in which case the fill starts over — written to L2 unless a newer record is
   there, announced on the bus, and the lease released.

With memcached down, steps 1–2 are skipped (single flight per process only). A failed load keeps
serving the stale value, if any, until ``ttl + max_stale``. Counter namespaces fill differently
(cache.counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cache.codec import Message, Record, ValueCodec
from cache.errors import CodecError, L2Unavailable, LoadError
from cache.memcache import L2
from cache.metrics import CacheMetrics, NamespaceCounts, NamespaceView
from cache.namespace import Namespace
from cache.settings import CacheSettings
from cache.store import L1Store, Offer, Policy
from cache.versions import clock_version, effective_version

log = logging.getLogger("cache")

T = TypeVar("T")

_FILL_ATTEMPTS = 4
_FIRST_POLL = 0.05  # seconds before a process waiting on another's load first polls L2
_MAX_POLL = 1.0


@dataclass
class Services:
    """What every region shares; the Cache fills in l2, publish and loop when it starts."""

    settings: CacheSettings
    metrics: CacheMetrics
    origin: str
    wall: Callable[[], float]
    mono: Callable[[], float]
    l2: L2 | None = None
    publish: Callable[[Message], None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


Listener = Callable[[str, str, int], None]
"""``listener(event, key, version)``: ``stored`` (a new value or version in L1), ``dropped``
(an invalidation removed it) or ``flushed`` (every key: a namespace flush; ``key`` is empty)."""


class _Superseded(Exception):
    """An invalidation arrived while loading: the value is already old; load again."""


class _Found(Generic[T]):
    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


class Region(Generic[T]):
    """One namespace. ``peek`` is the store's own hit path (see cache.store)."""

    peek: Callable[[str], T | None]

    def __init__(self, namespace: Namespace[T], services: Services) -> None:
        s = services.settings
        self.namespace = namespace
        self.name = namespace.name
        self.services = services
        self.ttl = namespace.ttl if namespace.ttl is not None else s.default_ttl
        self.max_stale = namespace.max_stale if namespace.max_stale is not None else s.max_stale
        policy = Policy(
            ttl=self.ttl,
            max_stale=self.max_stale,
            max_entries=namespace.max_entries or s.l1_max_entries,
            refresh_retry=s.refresh_retry,
            floor_retention=max(60.0, self.ttl + self.max_stale, 2 * s.load_timeout),
        )
        self.store: L1Store[T] = L1Store(policy, namespace.hot, on_miss=self._on_miss)
        self.peek = self.store.peek
        self.codec: ValueCodec[T] = ValueCodec(namespace.type, s.compress_min_bytes)
        self.counts = NamespaceCounts()
        self._inflight: dict[str, asyncio.Task[T | None]] = {}
        self._announced: dict[str, asyncio.Event] = {}
        self._listeners: list[Listener] = []
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True

    async def close(self) -> None:
        self._running = False
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()

    def view(self) -> NamespaceView:
        st = self.store
        return NamespaceView(
            name=self.name,
            counts=self.counts,
            l1_hits=st.hits,
            l1_misses=st.misses,
            refused=st.refused,
            evictions=st.evictions,
            expirations=st.expirations,
            entries=len(st),
        )

    def add_listener(self, listener: Listener) -> None:
        """Be told when L1 changes (see :data:`Listener`); e.g. to rebuild an index when the
        config snapshot changes. Called on the event loop; must not block."""
        self._listeners.append(listener)

    def _tell(self, event: str, key: str, version: int) -> None:
        for listener in self._listeners:
            try:
                listener(event, key, version)
            except Exception:
                log.exception("cache listener on %s failed", self.name)

    @property
    def shared(self) -> bool:
        return self.namespace.shared and self.services.l2 is not None

    # -- reads --------------------------------------------------------------------------------
    async def get(self, key: str) -> T | None:
        """The value, filling it (through L2 and L3) when L1 has none; raises LoadError."""
        e = self.store.entries.get(key)
        if e is not None:
            self.store.hits += 1
            e.ref = True
            return e.value  # type: ignore[no-any-return]
        self.store.misses += 1
        task = self._inflight.get(key) or self._start_fill(key)
        if task is None:
            raise LoadError(self.name, key, "the cache is not running")
        return await asyncio.shield(task)

    def _on_miss(self, key: str) -> None:
        """A peek missed: start a fill unless one runs or too many do (then it is shed)."""
        if key in self._inflight or not self._running:
            return
        if len(self._inflight) >= self.services.settings.max_inflight:
            self.counts.shed += 1
            return
        self._start_fill(key)

    def refresh(self, key: str) -> None:
        """Refresh a stale value in the background (it is served meanwhile)."""
        if key not in self._inflight and self._running:
            self._start_fill(key)

    def _start_fill(self, key: str) -> asyncio.Task[T | None] | None:
        loop = self.services.loop
        if loop is None or not self._running:
            return None
        task = loop.create_task(self._fill(key), name=f"cache-fill-{self.name}")
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._fill_done(key, t))
        return task

    def _fill_done(self, key: str, task: asyncio.Task[T | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, LoadError):
            log.error("cache fill %s/%s failed", self.name, key, exc_info=exc)

    async def _fill(self, key: str) -> T | None:
        event = self._announced.setdefault(key, asyncio.Event())
        try:
            return await self._fill_value(key, event)
        finally:
            if self._announced.get(key) is event:
                del self._announced[key]

    async def _fill_value(self, key: str, event: asyncio.Event) -> T | None:
        """Steps 1-3 of the module doc, retried when an invalidation overtakes a load."""
        for _ in range(_FILL_ATTEMPTS):
            held: bool | None = None
            if self.shared:
                found = await self._from_l2(key)
                if found is not None:
                    return found.value
                held = await self._try_lease(key)
                if held is False:
                    found = await self._await_holder(key, event)
                    if found is not None:
                        return found.value
                    continue
                if held:
                    # The last holder may have stored it and let go between our read and
                    # our lease: look again before loading.
                    found = await self._from_l2(key)
                    if found is not None:
                        await self._release(key)
                        return found.value
            try:
                return await self._load(key, held is True)
            except _Superseded:
                continue
        raise LoadError(self.name, key, "invalidated again during every load attempt")

    async def _from_l2(self, key: str) -> _Found[T] | None:
        """Step 1: a usable L2 record, offered to L1."""
        sv = self.services
        assert sv.l2 is not None
        t0 = sv.mono()
        try:
            records, floor = await sv.l2.read(self.name, [key])
        except L2Unavailable:
            return None
        self._learn_floor(floor)
        found = self._use_record(key, records.get(key))
        if found is None:
            self.counts.l2_misses += 1
        else:
            self.counts.l2_hits += 1
            sv.metrics.observe_fill("l2", self.name, sv.mono() - t0)
        return found

    def _learn_floor(self, floor: int) -> None:
        if floor > self.store.namespace_floor:
            self.store.invalidate_all(floor)
            self.counts.flush_version += 1

    def _use_record(self, key: str, record: Record | None) -> _Found[T] | None:
        if record is None:
            return None
        sv = self.services
        now = sv.mono()
        if not record.is_value:
            self.store.note_floor(key, record.version, now)
            return None
        if record.version < self.store.version(key):
            return None
        try:
            value = self.codec.value_of(record)
        except CodecError as exc:
            log.warning("ignoring an undecodable record for %s/%s: %s", self.name, key, exc)
            return None
        outcome = self.store.offer(key, value, record.version, now, sv.wall() - record.loaded_at)
        if outcome is Offer.STORED:
            if self._listeners:
                self._tell("stored", key, record.version)
            return _Found(value)
        if outcome is Offer.SAME:
            e = self.store.entries.get(key)
            if e is not None and e.fresh_until > now:
                return _Found(e.value)
        return None

    async def _try_lease(self, key: str) -> bool | None:
        """Step 2: True when this process holds the lease, False when another does, None when
        memcached cannot say."""
        sv = self.services
        assert sv.l2 is not None
        try:
            got = await sv.l2.try_lease(self.name, key, sv.origin, sv.settings.lease_seconds)
        except L2Unavailable:
            return None
        if not got:
            self.counts.lease_contention += 1
        return got

    async def _await_holder(self, key: str, event: asyncio.Event) -> _Found[T] | None:
        """Wait for the lease holder's value: the bus announcement, or L2 polled meanwhile.
        None when the lease is gone without a usable value (or after the lease period)."""
        sv = self.services
        assert sv.l2 is not None
        lease = float(sv.settings.lease_seconds)
        poll = _FIRST_POLL  # the announcement is the usual wake-up: polls back off
        t0 = sv.mono()
        deadline = t0 + lease + _FIRST_POLL
        floor = self.store.version(key)
        while sv.mono() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(poll, max(0.0, deadline - sv.mono()))):
                    await event.wait()
            event.clear()
            poll = min(poll * 2, _MAX_POLL)
            e = self.store.entries.get(key)
            if e is not None and e.version >= floor and e.fresh_until > sv.mono():
                sv.metrics.observe_fill("bus", self.name, sv.mono() - t0)
                return _Found(e.value)
            try:
                records, ns_floor, lease_held = await sv.l2.poll(self.name, key)
            except L2Unavailable:
                return None
            self._learn_floor(ns_floor)
            found = self._use_record(key, records.get(key))
            if found is not None:
                self.counts.l2_hits += 1
                sv.metrics.observe_fill("bus", self.name, sv.mono() - t0)
                return found
            if not lease_held:
                return None
        return None

    async def _load(self, key: str, holds_lease: bool) -> T | None:
        """Step 3: the loader, then L1, L2, the bus; the lease released whatever happens."""
        sv = self.services
        assert self.namespace.loader is not None
        try:
            floor = self.store.version(key)
            wall0, t0 = sv.wall(), sv.mono()
            try:
                async with asyncio.timeout(sv.settings.load_timeout):
                    loaded = await self.namespace.loader(key)
            except TimeoutError:
                self.counts.load_errors += 1
                raise LoadError(self.name, key, "timed out") from None
            except Exception as exc:
                self.counts.load_errors += 1
                raise LoadError(self.name, key, f"{type(exc).__name__}: {exc}") from exc
            version = effective_version(
                loaded.version, floor, int(wall0 * 1e6), self.namespace.versioning
            )
            outcome = self.store.offer(key, loaded.value, version, sv.mono(), sv.wall() - wall0)
            if outcome is Offer.OLDER_THAN_FLOOR:
                raise _Superseded
            self.counts.l3_loads += 1
            sv.metrics.observe_fill("l3", self.name, sv.mono() - t0)
            if outcome is Offer.STORED and self._listeners:
                self._tell("stored", key, version)
            if outcome is Offer.NOT_NEWER:
                e = self.store.entries.get(key)
                return e.value if e is not None else loaded.value
            record = self.codec.record(loaded.value, version, wall0)
            await self._share(key, record)
            return loaded.value
        finally:
            if holds_lease:
                await self._release(key)

    async def _release(self, key: str) -> None:
        if self.services.l2 is not None:
            with contextlib.suppress(L2Unavailable):
                await self.services.l2.release_lease(self.name, key)

    async def _share(self, key: str, record: Record) -> None:
        """A new value: to L2 (unless a newer record is there) and announced on the bus."""
        sv = self.services
        if self.shared:
            assert sv.l2 is not None
            with contextlib.suppress(L2Unavailable):
                await sv.l2.write_if_newer(self.name, key, record, self.ttl)
        if self.namespace.broadcast and sv.publish is not None:
            size = len(record.payload or b"")
            carried = record if size <= sv.settings.bus_value_max_bytes else None
            sv.publish(Message("fill", self.name, key, record.version, sv.origin, carried))

    async def incr(self, key: str, delta: int = 1, expire: float | None = None) -> int:
        raise TypeError(f"cache namespace {self.name!r} is not a counter")

    # -- writes -------------------------------------------------------------------------------
    def _next_version(self, key: str, version: int | None, what: str) -> int:
        if version is not None:
            return version
        if self.namespace.versioning != "clock":
            raise ValueError(
                f"{what} in the source-versioned namespace {self.name!r} needs a version"
            )
        return clock_version(int(self.services.wall() * 1e6), self.store.version(key))

    async def put(self, key: str, value: T, version: int | None = None) -> int:
        """Store a value computed elsewhere, fleet-wide; returns its version. An older version
        than what is known is not stored (the known version is returned)."""
        sv = self.services
        version = self._next_version(key, version, "put")
        outcome = self.store.offer(key, value, version, sv.mono())
        if outcome is Offer.OLDER_THAN_FLOOR or outcome is Offer.NOT_NEWER:
            return self.store.version(key)
        if outcome is Offer.STORED and self._listeners:
            self._tell("stored", key, version)
        await self._share(key, self.codec.record(value, version, sv.wall()))
        return version

    async def invalidate(self, key: str, version: int | None = None) -> int:
        """Drop ``key`` everywhere: here, a tombstone in L2, an announcement on the bus."""
        sv = self.services
        version = self._next_version(key, version, "invalidate")
        self.apply_invalidation(key, version, "local")
        if self.shared:
            assert sv.l2 is not None
            tombstone = Record(version=version, loaded_at=sv.wall())
            with contextlib.suppress(L2Unavailable):
                await sv.l2.write_if_newer(self.name, key, tombstone, self.ttl + self.max_stale)
        if sv.publish is not None:
            sv.publish(Message("inv", self.name, key, version, sv.origin))
        return version

    async def invalidate_all(self, version: int | None = None) -> int:
        """Drop every key older than ``version`` everywhere (the namespace's floor)."""
        sv = self.services
        if version is None:
            if self.namespace.versioning != "clock":
                raise ValueError(f"flushing the source-versioned {self.name!r} needs a version")
            version = clock_version(int(sv.wall() * 1e6), self.store.namespace_floor)
        self.apply_flush(version)
        if self.shared:
            assert sv.l2 is not None
            with contextlib.suppress(L2Unavailable):
                await sv.l2.raise_floor(self.name, version, self.ttl + self.max_stale)
        if sv.publish is not None:
            sv.publish(Message("flush", self.name, "", version, sv.origin))
        return version

    # -- what the bus says --------------------------------------------------------------------
    def apply_invalidation(self, key: str, version: int, source: str) -> None:
        result = self.store.invalidate(key, version, self.services.mono())
        if result.applied:
            if source == "bus":
                self.counts.invalidations_bus += 1
            else:
                self.counts.invalidations_local += 1
        if result.removed:
            if self._listeners:
                self._tell("dropped", key, version)
            if result.hot:
                self.refresh(key)

    def apply_flush(self, version: int | None, reason: str = "version") -> None:
        """Drop what is older than ``version`` (everything when None: after a gap or silence)."""
        hot = self.store.invalidate_all(version)
        if self._listeners:
            self._tell("flushed", "", version or 0)
        if reason == "gap":
            self.counts.flush_gap += 1
        elif reason == "silent":
            self.counts.flush_silent += 1
        else:
            self.counts.flush_version += 1
        for key in hot:
            self.refresh(key)

    def apply_fill(self, key: str, version: int, record: Record | None) -> None:
        """Another process filled ``key``: take the value if it is in use here or awaited."""
        event = self._announced.get(key)
        if record is not None and record.is_value:
            if version < self.store.version(key):
                self.store.refused += 1  # older than a value or invalidation seen here
            elif key in self.store or event is not None or key in self.store.hot_keys:
                self._use_record(key, record)
        if event is not None:
            event.set()
