"""L2: the memcached adapter. Blocking pymemcache calls run on a small thread pool, never on the
event loop's thread.

Each key lives on one server chosen by rendezvous hashing over *all* configured servers; a server
that is down is not replaced by another (that one would lack the key's tombstones), so its keys
simply have no L2 until it is back. A failed call marks its server down: from then on calls for
it fail at once with :class:`~cache.errors.L2Unavailable` (the cache goes to L3) and a background
probe retries every ``retry`` seconds until the server answers again.

Writes never replace a newer record with an older one: ``write_if_newer`` is a gets/cas loop
that compares versions (:func:`cache.versions.supersedes`). Counters are memcached's own ASCII
integers (``incr``), so that increments from the whole fleet are atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError, MemcacheServerError, MemcacheUnexpectedCloseError

from cache.codec import (
    Record,
    decode_int,
    decode_record,
    encode_int,
    encode_record,
    l2_floor_key,
    l2_key,
)
from cache.errors import CodecError, L2Unavailable
from cache.versions import supersedes

log = logging.getLogger("cache.memcache")

R = TypeVar("R")

MAX_RELATIVE_EXPIRE = 30 * 24 * 3600  # memcached reads larger values as a unix timestamp
_CAS_ATTEMPTS = 8
_READ_BATCH_KEYS = 256


def expire_seconds(seconds: float) -> int:
    """memcached's expiry: whole seconds, at least 1 (0 would mean never), at most 30 days."""
    return max(1, min(MAX_RELATIVE_EXPIRE, math.ceil(seconds)))


@dataclass
class ServerState:
    address: tuple[str, int]
    up: bool = True
    failures: int = 0
    probe: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


class L2:
    """memcached for one process; see the module doc. ``start()`` once, ``close()`` at the end."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        prefix: str,
        pool_size: int = 4,
        timeout: float = 0.5,
        retry: float = 1.0,
        value_max_bytes: int = 1_000_000,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not servers:
            raise ValueError("L2 needs at least one memcached server")
        self.prefix = prefix
        self.timeout = timeout
        self.retry = retry
        self.value_max_bytes = value_max_bytes
        self.servers = [ServerState(tuple(s)) for s in servers]  # type: ignore[arg-type]
        self._keys = [
            hashlib.blake2b(s.name.encode(), digest_size=8).digest() for s in self.servers
        ]
        self._pool_size = pool_size
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._clients_lock = threading.Lock()
        self._all_clients: list[Client] = []
        self._reads: dict[int, deque[tuple[list[str], asyncio.Future[dict[str, bytes]]]]] = {}
        self._reads_running: dict[int, int] = {}
        self._on_change = on_change
        self._closed = False
        self.errors = 0
        self.read_batches = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix="cache-l2")
        await asyncio.gather(*(self._probe_once(i) for i in range(len(self.servers))))
        for i, s in enumerate(self.servers):
            if not s.up:
                self._start_probe(i)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for queue in self._reads.values():
            while queue:
                _, future = queue.popleft()
                if not future.done():
                    future.set_exception(L2Unavailable("memcached client closed"))
        probes = [s.probe for s in self.servers if s.probe is not None]
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True)
        # The worker threads are gone: their connections can be closed from here.
        with self._clients_lock:
            clients, self._all_clients = self._all_clients, []
        for client in clients:
            client.close()

    @property
    def up(self) -> bool:
        """Every server reachable (as far as the last call or probe knows)."""
        return all(s.up for s in self.servers)

    def server_of(self, mkey: str) -> int:
        if len(self.servers) == 1:
            return 0
        data = mkey.encode()
        scores = [hashlib.blake2b(data, digest_size=8, key=k).digest() for k in self._keys]
        return max(range(len(scores)), key=scores.__getitem__)

    # -- calls on the thread pool ---------------------------------------------------------------
    def _client(self, index: int) -> Client:
        clients: dict[int, Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(index)
        if client is None:
            client = Client(
                self.servers[index].address,
                connect_timeout=self.timeout,
                timeout=self.timeout,
                no_delay=True,
                default_noreply=False,
            )
            clients[index] = client
            with self._clients_lock:
                self._all_clients.append(client)
        return client

    def _run(self, index: int, fn: Callable[[Client], R]) -> R:
        client = self._client(index)
        try:
            return fn(client)
        except (OSError, MemcacheUnexpectedCloseError):
            client.close()
            raise

    async def _call(self, index: int, fn: Callable[[Client], R]) -> R:
        state = self.servers[index]
        if not state.up or self._executor is None:
            raise L2Unavailable(f"memcached {state.name} is down")
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._run, index, fn)
        except (OSError, MemcacheUnexpectedCloseError) as exc:
            self._mark_down(index, exc)
            raise L2Unavailable(f"memcached {state.name}: {exc!r}") from exc
        except MemcacheServerError as exc:
            self.errors += 1
            raise L2Unavailable(f"memcached {state.name} refused: {exc}") from exc
        except MemcacheError as exc:
            self.errors += 1
            raise L2Unavailable(f"memcached {state.name}: {exc!r}") from exc

    def _mark_down(self, index: int, exc: BaseException) -> None:
        state = self.servers[index]
        self.errors += 1
        state.failures += 1
        if state.up:
            was_up = self.up
            state.up = False
            log.warning("memcached %s is down (%r); running on L1 + L3", state.name, exc)
            if was_up and self._on_change is not None:
                self._on_change(False)
        self._start_probe(index)

    def _start_probe(self, index: int) -> None:
        state = self.servers[index]
        if self._closed or (state.probe is not None and not state.probe.done()):
            return
        state.probe = asyncio.get_running_loop().create_task(
            self._probe_loop(index), name=f"cache-l2-probe-{state.name}"
        )

    async def _probe_loop(self, index: int) -> None:
        state = self.servers[index]
        while not state.up and not self._closed:
            await asyncio.sleep(self.retry)
            await self._probe_once(index)

    async def _probe_once(self, index: int) -> None:
        state = self.servers[index]
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._run, index, lambda c: c.version())
        except (OSError, MemcacheError) as exc:
            if state.up:
                state.up = False
                log.warning("memcached %s is not reachable: %r", state.name, exc)
                if self._on_change is not None:
                    self._on_change(False)
            return
        if not state.up:
            state.up = True
            state.failures = 0
            log.info("memcached %s is back", state.name)
            if self._on_change is not None and self.up:
                self._on_change(True)

    # -- records ------------------------------------------------------------------------------
    async def _get_many(self, mkeys: Sequence[str]) -> dict[str, bytes]:
        groups: dict[int, list[str]] = {}
        for k in mkeys:
            groups.setdefault(self.server_of(k), []).append(k)
        found: dict[str, bytes] = {}
        for index, keys in groups.items():
            found.update(await self._batched_get(index, keys))
        return found

    async def _batched_get(self, index: int, keys: list[str]) -> dict[str, bytes]:
        """Reads issued together (a cold start misses on many keys at once) share ``get_many``
        calls: at most ``pool_size`` per server at a time, the rest queued meanwhile."""
        state = self.servers[index]
        if not state.up or self._executor is None:
            raise L2Unavailable(f"memcached {state.name} is down")
        future: asyncio.Future[dict[str, bytes]] = asyncio.get_running_loop().create_future()
        queue = self._reads.setdefault(index, deque())
        queue.append((keys, future))
        if len(queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush_reads, index)
        return await future

    def _flush_reads(self, index: int) -> None:
        queue = self._reads.get(index)
        while queue and self._reads_running.get(index, 0) < self._pool_size:
            batch: list[tuple[list[str], asyncio.Future[dict[str, bytes]]]] = []
            wanted: dict[str, None] = {}
            while queue and len(wanted) < _READ_BATCH_KEYS:
                keys, future = queue.popleft()
                batch.append((keys, future))
                wanted.update(dict.fromkeys(keys))
            self._reads_running[index] = self._reads_running.get(index, 0) + 1
            self.read_batches += 1
            task = asyncio.get_running_loop().create_task(self._read_batch(index, list(wanted)))
            task.add_done_callback(lambda t, b=batch: self._read_done(index, t, b))  # type: ignore[misc]

    async def _read_batch(self, index: int, keys: list[str]) -> dict[str, bytes]:
        got: dict[str, bytes] = await self._call(index, lambda c: c.get_many(keys))
        return got

    def _read_done(
        self,
        index: int,
        task: asyncio.Task[dict[str, bytes]],
        batch: list[tuple[list[str], asyncio.Future[dict[str, bytes]]]],
    ) -> None:
        self._reads_running[index] -= 1
        error = task.exception() if not task.cancelled() else L2Unavailable("read cancelled")
        got = task.result() if error is None else {}
        for keys, future in batch:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result({k: got[k] for k in keys if k in got})
        if self._reads.get(index):
            self._flush_reads(index)

    async def read(self, namespace: str, keys: Sequence[str]) -> tuple[dict[str, Record], int]:
        """The records held for ``keys`` (tombstones included) and the namespace's floor."""
        fkey = l2_floor_key(self.prefix, namespace)
        mkeys = {l2_key(self.prefix, namespace, k): k for k in keys}
        got = await self._get_many([*mkeys, fkey])
        floor = 0
        raw_floor = got.pop(fkey, None)
        if raw_floor is not None:
            with contextlib.suppress(CodecError):
                floor = decode_int(raw_floor)
        records: dict[str, Record] = {}
        for mkey, data in got.items():
            try:
                records[mkeys[mkey]] = decode_record(data)
            except CodecError as exc:
                log.warning("ignoring an undecodable L2 record %s: %s", mkey, exc)
        return records, floor

    async def poll(self, namespace: str, key: str) -> tuple[dict[str, Record], int, bool]:
        """``read`` of one key, and whether its lease is still held (for a process waiting on
        another's load)."""
        lkey = l2_key(self.prefix, namespace, key, "~lease")
        fkey = l2_floor_key(self.prefix, namespace)
        mkey = l2_key(self.prefix, namespace, key)
        got = await self._get_many([mkey, fkey, lkey])
        floor = 0
        with contextlib.suppress(CodecError):
            floor = decode_int(got[fkey]) if fkey in got else 0
        records: dict[str, Record] = {}
        if mkey in got:
            with contextlib.suppress(CodecError):
                records[key] = decode_record(got[mkey])
        return records, floor, lkey in got

    async def write_if_newer(self, namespace: str, key: str, record: Record, expire: float) -> bool:
        """Store ``record`` unless memcached holds a newer one; True when stored."""
        data = encode_record(record)
        if len(data) > self.value_max_bytes:
            return False
        mkey = l2_key(self.prefix, namespace, key)
        ttl = expire_seconds(expire)

        def write(c: Client) -> bool:
            for _ in range(_CAS_ATTEMPTS):
                old, token = c.gets(mkey)
                if old is None:
                    if c.add(mkey, data, expire=ttl, noreply=False):
                        return True
                    continue
                try:
                    o = decode_record(old)
                except CodecError:
                    o = Record(version=-1, loaded_at=0.0)
                if not supersedes(
                    record.version,
                    record.is_value,
                    record.loaded_at,
                    o.version,
                    o.is_value,
                    o.loaded_at,
                ):
                    return False
                if c.cas(mkey, data, token, expire=ttl, noreply=False):
                    return True
            return False

        return await self._call(self.server_of(mkey), write)

    async def raise_floor(self, namespace: str, version: int, expire: float) -> bool:
        """Raise the namespace's floor to ``version`` (never lower it); True when raised."""
        fkey = l2_floor_key(self.prefix, namespace)
        data = encode_int(version)
        ttl = expire_seconds(expire)

        def write(c: Client) -> bool:
            for _ in range(_CAS_ATTEMPTS):
                old, token = c.gets(fkey)
                if old is None:
                    if c.add(fkey, data, expire=ttl, noreply=False):
                        return True
                    continue
                try:
                    if decode_int(old) >= version:
                        return False
                except CodecError:
                    pass
                if c.cas(fkey, data, token, expire=ttl, noreply=False):
                    return True
            return False

        return await self._call(self.server_of(fkey), write)

    # -- leases -------------------------------------------------------------------------------
    async def try_lease(self, namespace: str, key: str, holder: str, seconds: float) -> bool:
        """Take the fleet-wide load lease for ``key`` (atomic ``add``); False when it is held."""
        mkey = l2_key(self.prefix, namespace, key, "~lease")
        ttl = expire_seconds(seconds)
        value = holder.encode()
        return await self._call(
            self.server_of(mkey), lambda c: bool(c.add(mkey, value, expire=ttl, noreply=False))
        )

    async def release_lease(self, namespace: str, key: str) -> None:
        mkey = l2_key(self.prefix, namespace, key, "~lease")
        await self._call(self.server_of(mkey), lambda c: c.delete(mkey, noreply=False))

    # -- counters -----------------------------------------------------------------------------
    async def counter_get(self, namespace: str, keys: Sequence[str]) -> dict[str, int]:
        mkeys = {l2_key(self.prefix, namespace, k): k for k in keys}
        got = await self._get_many(list(mkeys))
        values: dict[str, int] = {}
        for mkey, data in got.items():
            with contextlib.suppress(ValueError):
                values[mkeys[mkey]] = int(data)
        return values

    async def counter_add(self, namespace: str, key: str, delta: int, expire: float) -> int:
        """Add ``delta`` (>= 0) atomically; creates the counter (with ``expire``) when missing."""
        mkey = l2_key(self.prefix, namespace, key)
        ttl = expire_seconds(expire)

        def add(c: Client) -> int:
            for _ in range(_CAS_ATTEMPTS):
                value: Any = c.incr(mkey, delta, noreply=False)
                if value is not None:
                    return int(value)
                if c.add(mkey, str(delta).encode(), expire=ttl, noreply=False):
                    return delta
            raise MemcacheError(f"counter {mkey} kept changing")

        return await self._call(self.server_of(mkey), add)

    async def counter_seed(self, namespace: str, key: str, value: int, expire: float) -> int:
        """Create the counter at ``value`` unless it exists; returns what memcached holds."""
        mkey = l2_key(self.prefix, namespace, key)
        ttl = expire_seconds(expire)

        def seed(c: Client) -> int:
            if c.add(mkey, str(value).encode(), expire=ttl, noreply=False):
                return value
            got = c.get(mkey)
            return int(got) if got is not None else value

        return await self._call(self.server_of(mkey), seed)

    async def delete(self, namespace: str, key: str) -> None:
        mkey = l2_key(self.prefix, namespace, key)
        await self._call(self.server_of(mkey), lambda c: c.delete(mkey, noreply=False))
