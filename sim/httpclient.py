"""A small keep-alive HTTP/1.1 client on asyncio for open-loop load: callbacks, not tasks.

One ``Pool`` per origin holds at most ``max_connections`` connections, each carrying one request
at a time (no pipelining). A request waits in the pool's queue while every connection is busy;
if its ``expire_at`` passes there, it is never sent (``error="expired"``: the client, not the
server, could not keep up, and the report says so). Once written, a request has ``timeout``
seconds to be answered, after which its connection is aborted (``"timeout"``). A refused
connection fails the waiting requests at once (``"refused"``) and the origin is left alone for a
short back-off, during which new requests fail the same way without a connection attempt:
notices to a service that is not running cost little.

Every result carries ``sent_at`` and ``done_at`` from ``time.perf_counter`` (uvloop's loop clock
counts whole milliseconds, too coarse for latency); deadlines and timers use the loop's clock.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from sim.errors import HttpProtocolError
from sim.http1 import Response, ResponseParser, build_request

log = logging.getLogger(__name__)

_clock = time.perf_counter
REFUSED_BACKOFF = 0.25  # seconds an origin that refused a connection is left alone


@dataclasses.dataclass(slots=True)
class Result:
    response: Response | None
    error: str  # "" | "refused" | "timeout" | "reset" | "protocol" | "expired" | "queue_full" | ...
    sent_at: float  # 0.0 when never written
    done_at: float

    @property
    def status(self) -> int:
        return self.response.status if self.response is not None else 0


Callback = Callable[[Result], None]


@dataclasses.dataclass(slots=True)
class _Pending:
    data: bytes
    expire_at: float  # not sent by then: never sent
    timeout: float  # seconds from sending
    callback: Callback


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.current: _Pending | None = None
        self._sent_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, pending: _Pending) -> None:
        assert self.transport is not None and self.current is None
        loop = self._pool.loop
        self.current = pending
        self._sent_at = _clock()
        self.transport.write(pending.data)
        self._timer = loop.call_at(loop.time() + pending.timeout, self._on_timeout)

    def data_received(self, data: bytes) -> None:
        now = _clock()
        try:
            responses = self._parser.feed(data)
        except HttpProtocolError as exc:
            log.debug("protocol error from %s: %s", self._pool.origin, exc)
            self._fail("protocol", now)
            self._abort()
            return
        for response in responses:
            if self.current is None:
                self._abort()  # an answer nobody asked for: this connection cannot be trusted
                return
            self._complete(Result(response, "", self._sent_at, now))
            if not response.keep_alive:
                self._abort()
                return
            self._pool._idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        now = _clock()
        if self.current is not None:
            try:
                response = self._parser.feed_eof()
            except HttpProtocolError:
                response = None
            if response is not None:
                self._complete(Result(response, "", self._sent_at, now))
            else:
                self._fail("reset", now)
        self.transport = None
        self._pool._lost(self)

    def _complete(self, result: Result) -> None:
        pending = self.current
        assert pending is not None
        self.current = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pool._finish(pending, result)

    def _fail(self, error: str, now: float) -> None:
        if self.current is not None:
            self._complete(Result(None, error, self._sent_at, now))

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail("timeout", _clock())
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._fail("closed", _clock())
        self._abort()


class Pool:
    """Keep-alive connections to one origin (host, port), bounded, with a bounded queue."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int,
        max_queue: int = 10_000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.origin = f"{host}:{port}"
        self.loop = loop or asyncio.get_running_loop()
        self._max = max_connections
        self._max_queue = max_queue
        self._queue: collections.deque[_Pending] = collections.deque()
        self._idle_conns: list[_Connection] = []
        self._conns: set[_Connection] = set()
        self._connecting = 0
        self._down_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.connects = 0
        self.refusals = 0
        self.in_flight = 0
        self.peak_queue = 0
        self._idle_event = asyncio.Event()
        self._idle_event.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def request(self, data: bytes, *, timeout: float, expire_at: float, callback: Callback) -> None:
        """Send ``data`` (a whole request) by ``expire_at``; ``callback`` is called exactly once."""
        now = self.loop.time()
        if self._closed:
            callback(Result(None, "closed", 0.0, _clock()))
            return
        if now < self._down_until and not self._conns:
            callback(Result(None, "refused", 0.0, _clock()))
            return
        self.in_flight += 1
        self._idle_event.clear()
        pending = _Pending(data, expire_at, timeout, callback)
        while self._idle_conns:
            conn = self._idle_conns.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(pending)
                return
        if len(self._queue) >= self._max_queue:
            self._finish(pending, Result(None, "queue_full", 0.0, _clock()))
            return
        self._queue.append(pending)
        self.peak_queue = max(self.peak_queue, len(self._queue))
        if len(self._conns) + self._connecting < self._max:
            self._connecting += 1
            task = self.loop.create_task(self._connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError as exc:
            self._connecting -= 1
            self.refusals += 1
            self._down_until = self.loop.time() + REFUSED_BACKOFF
            log.debug("cannot connect to %s: %s", self.origin, exc)
            if not self._conns:
                self._fail_queue("refused")
            return
        except asyncio.CancelledError:
            self._connecting -= 1
            raise
        self._connecting -= 1
        self.connects += 1
        self._conns.add(conn)
        self._idle(conn)

    def _idle(self, conn: _Connection) -> None:
        now = self.loop.time()
        while self._queue:
            pending = self._queue.popleft()
            if pending.expire_at <= now:
                self._finish(pending, Result(None, "expired", 0.0, _clock()))
                continue
            conn.send(pending)
            return
        self._idle_conns.append(conn)

    def _lost(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        if conn in self._idle_conns:
            self._idle_conns.remove(conn)
        if self._queue and not self._closed and len(self._conns) + self._connecting < self._max:
            self._connecting += 1
            task = self.loop.create_task(self._connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _finish(self, pending: _Pending, result: Result) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle_event.set()
        try:
            pending.callback(result)
        except Exception:
            log.exception("result callback failed for %s", self.origin)

    def _fail_queue(self, error: str) -> None:
        while self._queue:
            self._finish(self._queue.popleft(), Result(None, error, 0.0, _clock()))

    def expire_queue(self) -> None:
        """Fail queued requests whose deadline has passed (called from a periodic tick)."""
        now = self.loop.time()
        if self._queue and self._queue[0].expire_at <= now:
            keep: collections.deque[_Pending] = collections.deque()
            while self._queue:
                pending = self._queue.popleft()
                if pending.expire_at <= now:
                    self._finish(pending, Result(None, "expired", 0.0, _clock()))
                else:
                    keep.append(pending)
            self._queue = keep

    async def wait_idle(self) -> None:
        """Return once nothing is queued or in flight."""
        await self._idle_event.wait()

    async def close(self) -> None:
        """Fail what is queued or in flight ("closed") and close every connection."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_queue("closed")
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        self._idle_conns.clear()
        await asyncio.sleep(0)


class Client:
    """Pools by origin, for URLs; hosts outside ``allowed_hosts`` are never contacted."""

    def __init__(
        self,
        *,
        max_connections: int,
        allowed_hosts: frozenset[str],
        user_agent: str = "rtbfleet-sim/0.1",
    ) -> None:
        self._max = max_connections
        self._allowed = allowed_hosts
        self._pools: dict[tuple[str, int], Pool] = {}
        self._ua = user_agent

    @property
    def pools(self) -> list[Pool]:
        return list(self._pools.values())

    def pool(self, host: str, port: int) -> Pool:
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = Pool(host, port, max_connections=self._max)
        return pool

    def get(self, url: str, timeout: float, callback: Callback) -> None:
        """GET ``url``; it must be sent and answered within ``timeout`` seconds each."""
        loop = asyncio.get_running_loop()
        try:
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port or 80
        except ValueError:
            callback(Result(None, "bad_url", 0.0, _clock()))
            return
        if parts.scheme != "http" or not host:
            callback(Result(None, "bad_url", 0.0, _clock()))
            return
        if host not in self._allowed:
            callback(Result(None, "not_allowed", 0.0, _clock()))
            return
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        netloc = parts.netloc.rsplit("@", 1)[-1]
        data = build_request("GET", target, netloc, (("User-Agent", self._ua),))
        now = loop.time()
        self.pool(host, port).request(
            data, timeout=timeout, expire_at=now + timeout, callback=callback
        )

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
