"""The HTTP/1.1 server: an ``asyncio.Protocol`` per connection (fleet/http/connection.py,
compiled in fleet/http/_connection.pyx) over the loop's own transports (uvloop's, in C), the
framing of fleet/http/framing.py, routes by path, and a
``tornado.web.Application`` for every other path.

A route is a path with the methods it serves and a handler called with the ``Request``; it
returns a ``Response``, the whole response as bytes (then it must say ``Connection: close``
itself when ``request.close``), or None to close the connection without an answer; or an
awaitable of one of those. An ``asyncio.Future`` is answered from its done callback, without a
task (a handler whose answers are settled many at a time, by one batch, need not run a
coroutine per request; a cancelled one closes the connection unanswered); any other awaitable
runs as a task. A path without a route goes to the Application (health checks,
metrics, anything slow), a route's path with another method gets 405.

What keeps a connection cheap and bounded:
- one write per answer; the write buffer's high-water mark is zero, so a peer that does not
  read its answers stops being read (``pause_writing``) instead of growing a buffer;
- pipelined requests are framed as they arrive, queued, and answered one per loop iteration,
  in order, with reading paused while any wait or an answer is under way (a read is at most
  what one ``recv`` returns, so the queue is bounded);
- in flight (``in_flight``) is a request that is complete and not yet answered: a slow body
  counts for nothing;
- no timer per connection: each connection's framer says what it waits for since when, and one
  sweeper closes those past the head, body or idle timeout (``HttpLimits``), and aborts those
  whose peer has not read its answers for the idle timeout;
- past ``max_connections`` a new connection is closed at accept, counted and logged (at most a
  line a minute);
- a refused request is answered, the write side shut, and what the peer still sends is read
  and dropped for a moment (a lingering close: the answer is not lost to a reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, cast

from tornado import netutil, web

from fleet.http.connection import (
    Handler,
    HttpConnection,
    PyConnection,
    Result,
    Route,
)
from fleet.http.framing import BODY, HEAD, Request
from fleet.http.limits import LINGER_S, HttpLimits
from fleet.http.metrics import HttpMetrics

log = logging.getLogger("fleet.http")

__all__ = ["Handler", "HttpServer", "Result"]

CAP_LOG_INTERVAL: Final = 60.0  # seconds between log lines about the connection cap


def _unstarted(callback: Callable[[], None]) -> object:
    raise RuntimeError("the server is not listening")


class HttpServer:
    """One process's server. ``route`` before ``listen``; ``shutdown`` drains.

    ``lag`` says how long bytes read now probably waited unread (event-loop lag): requests are
    stamped that much earlier (None: not at all). ``app`` serves the paths without a route
    (None: 404).
    ``connection`` makes each connection's protocol: ``HttpConnection`` (compiled where built),
    or the reference ``PyConnection``."""

    def __init__(
        self,
        limits: HttpLimits,
        *,
        metrics: HttpMetrics,
        app: web.Application | None = None,
        lag: Callable[[], float] | None = None,
        connection: type[HttpConnection] | type[PyConnection] = HttpConnection,
        fd_limit: int | None = None,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.app = app
        self.lag = lag
        self.connection = connection
        if fd_limit is None:
            fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.cap = limits.connection_cap(fd_limit)
        self.routes: dict[str, Route] = {}
        self.draining = False
        self.in_flight = 0
        self.connections_open: set[HttpConnection | PyConnection] = set()
        self.call_soon: Callable[[Callable[[], None]], object] = _unstarted
        self.sockets: list[socket.socket] = []
        self._listeners: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cap_logged = -CAP_LOG_INTERVAL
        self._rejected_since_log = 0
        self._errors_logged = -CAP_LOG_INTERVAL

    def route(self, path: str, handler: Handler, methods: Iterable[str] = ("GET",)) -> None:
        self.routes[path] = Route(handler, methods)

    @property
    def connections(self) -> int:
        return len(self.connections_open)

    def run(self, work: Awaitable[None]) -> None:
        """A task that outlives the call (held here until done: the loop keeps weak ones)."""
        task = asyncio.get_running_loop().create_task(cast(Any, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def rejected(self) -> None:
        """A connection over the cap: counted always, logged at most once a minute."""
        self.metrics.reject()
        self._rejected_since_log += 1
        now = time.monotonic()
        if now - self._cap_logged >= CAP_LOG_INTERVAL:
            log.warning(
                "connection cap reached (%d open, RTBFLEET_HTTP_MAX_CONNECTIONS / ulimit -n): "
                "%d new connection(s) closed at accept since the last line",
                self.cap,
                self._rejected_since_log,
            )
            self._cap_logged, self._rejected_since_log = now, 0

    def handler_failed(self, request: Request, result: object = None) -> None:
        """A handler raised (or returned something it may not): answered 500; logged with its
        traceback at most once a minute."""
        self.metrics.count("closed", "handler_error")
        now = time.monotonic()
        if now - self._errors_logged >= CAP_LOG_INTERVAL:
            self._errors_logged = now
            if result is None:
                log.exception("handler of %s %s failed", request.method, request.path[:100])
            else:
                log.error("handler of %s %s returned %r", request.method, request.path[:100],
                          type(result))  # fmt: skip

    async def listen(self, port: int, host: str, backlog: int = 2048) -> int:
        """Bind with SO_REUSEPORT (every server process binds the same port and the kernel
        spreads connections) and start accepting; returns the port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self.call_soon = loop.call_soon
        self.metrics.fold_each_iteration(loop.call_soon)
        self.sockets = netutil.bind_sockets(port, host, backlog=backlog, reuse_port=True)
        for sock in self.sockets:
            listener = await loop.create_server(
                # the compiled connection is an asyncio protocol by its methods, not its type
                lambda: cast(asyncio.Protocol, self.connection(self)),
                sock=sock,
                backlog=backlog,
            )
            self._listeners.append(listener)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), name="http-sweeper")
        return int(self.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        limits = self.limits
        shortest = min(limits.header_timeout_s, limits.body_timeout_s, limits.idle_timeout_s)
        interval = max(0.02, min(0.5, shortest / 4, LINGER_S / 2))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections_open):
                phase = conn.expired(now)
                if phase is not None:
                    conn.time_out(phase)

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting; let requests under way finish (answers say ``Connection: close``);
        close idle connections at once and everything after ``drain_timeout``."""
        for listener in self._listeners:
            listener.close()
        self.draining = True
        deadline = time.monotonic() + drain_timeout
        while self.connections_open and time.monotonic() < deadline:
            for conn in list(self.connections_open):
                idle = not (conn.busy or conn.counted or conn.framer.phase in (HEAD, BODY))
                if idle and not conn.writing:
                    conn.close()
            await asyncio.sleep(0.02)
        for conn in list(self.connections_open):
            conn.abort()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
        self.metrics.fold_each_iteration(None)
        self.metrics.fold()
