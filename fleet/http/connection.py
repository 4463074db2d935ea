"""One client connection of the HTTP/1.1 server (``HttpServer`` in fleet/http/server.py): an
``asyncio.Protocol`` over the loop's transport, the framer underneath, routes by path.

``PyConnection`` is the reference; ``Connection`` in fleet/http/_connection.pyx is its compiled
twin, the same code statement for statement with the per-request path typed (the framer's
fields read in C, the usual answer's head built in C, no Python frame between a read and its
answer's write). ``HttpConnection`` is the compiled one where the extension is built.
tests/integration/test_http_server.py runs the server over both. A change to one is a change
to the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from tornado import web

from fleet.http.bridge import serve_with_application
from fleet.http.errors import HttpError
from fleet.http.framing import BODY, DONE, HEAD, Framer, Request
from fleet.http.heads import CONTINUE, INTERNAL_ERROR, error_response
from fleet.http.limits import LINGER_BYTES, LINGER_S, HttpLimits
from fleet.http.wire import Response

if TYPE_CHECKING:  # imported on first use (see fleet/http/__init__.py)
    from fleet.http.metrics import HttpMetrics

log = logging.getLogger("fleet.http")

__all__ = ["Handler", "HttpConnection", "PyConnection", "Result", "Route", "Server"]

Result = Response | bytes | None
Handler = Callable[[Request], Result | Awaitable[Result]]


class Server(Protocol):
    """What a connection needs of its server (``HttpServer``): settings and routes, the counts
    it keeps up to date, and where it reports."""

    limits: HttpLimits
    metrics: HttpMetrics
    routes: dict[str, Route]
    app: web.Application | None
    lag: Callable[[], float] | None
    call_soon: Callable[[Callable[[], None]], object]
    cap: int
    draining: bool
    in_flight: int
    connections_open: set[Any]

    def rejected(self) -> None: ...
    def run(self, work: Awaitable[None]) -> None: ...
    def handler_failed(self, request: Request, result: object = None) -> None: ...


class Route:
    __slots__ = ("handler", "methods")

    def __init__(self, handler: Handler, methods: Iterable[str]) -> None:
        self.handler = handler
        self.methods = frozenset(methods)
        if "GET" in self.methods:
            self.methods |= {"HEAD"}


class PyConnection(asyncio.Protocol):
    """One client connection (see fleet/http/server.py's docstring)."""

    __slots__ = (
        "advance",
        "backlogged",
        "busy",
        "counted",
        "framer",
        "linger_since",
        "lingered",
        "queued",
        "ready_since",
        "remote_ip",
        "served",
        "server",
        "transport",
        "write",
        "write_paused",
        "write_paused_since",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.framer = Framer(server.limits)
        self.transport: asyncio.Transport | None = None
        self.write: Callable[[bytes], Any] = _discard
        self.remote_ip = ""
        self.busy = False  # an answer is under way (an awaitable handler, the Application)
        self.queued = False  # _advance is scheduled
        self.backlogged = False  # requests wait behind another: reading paused
        self.write_paused = False  # the peer does not read its answers
        self.write_paused_since = 0.0
        self.counted = 0  # this connection's requests in the server's in_flight
        self.served = 0
        self.ready_since = time.monotonic()  # since when the client, not we, holds things up
        self.linger_since = 0.0  # a refusal was answered: reading only to drop
        self.lingered = 0
        self.advance = self._advance  # bound once: scheduled for every request

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        server = self.server
        if len(server.connections_open) >= server.cap:
            server.rejected()
            transport.abort()
            return
        self.write = transport.write
        address = transport.get_extra_info("peername")
        self.remote_ip = address[0] if isinstance(address, tuple) and address else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=0)
        server.connections_open.add(self)
        server.metrics.connections(len(server.connections_open))

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self in server.connections_open:
            server.connections_open.discard(self)
            server.metrics.connections(len(server.connections_open))
        server.in_flight -= self.counted
        self.counted = 0
        self.write = _discard

    def data_received(self, data: bytes) -> None:
        if self.linger_since:
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self.abort()
            return
        framer, server = self.framer, self.server
        requests = framer.requests
        before = len(requests)
        lag = server.lag
        framer.feed(data, time.monotonic() - (lag() if lag is not None else 0.0))
        queued = len(requests)
        if queued > before:
            added = queued - before
            self.counted += added
            server.in_flight += added
        elif framer.continue_due and not (self.busy or queued):
            framer.continue_due = False
            self.write(CONTINUE)
        if (queued or framer.phase == DONE) and not (self.queued or self.busy):
            # Answered from the loop's ready queue, as a coroutine would be: the lag probe then
            # runs between reading requests and answering them, as load shedding expects.
            self.queued = True
            server.call_soon(self.advance)
        if queued > 1 or (queued and self.busy):
            self._backlog(True)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = time.monotonic()
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._go_on()

    # -- answering ------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Answer the next complete request (one per loop iteration), or the framing error
        once every request before it is answered."""
        self.queued = False
        transport = self.transport
        if self.busy or self.write_paused or self.linger_since or transport is None:
            return
        if transport.is_closing():
            return
        framer = self.framer
        try:
            if framer.requests:
                self._serve(framer.requests.popleft())
            elif framer.error is not None:
                self._refuse(framer.error)
                return
            elif framer.phase == DONE:  # the last request closed the connection
                self.close()
                return
        except Exception:
            log.exception("connection from %s failed", self.remote_ip)
            self.abort()
            return
        if self.busy or transport.is_closing():
            return
        self._next()

    def _next(self) -> None:
        framer = self.framer
        if framer.requests or framer.phase == DONE:
            self._backlog(True)
            self.queued = True
            self.server.call_soon(self.advance)
        else:
            if self.backlogged:
                self._backlog(False)
            if framer.continue_due and framer.phase == BODY:
                framer.continue_due = False
                self.write(CONTINUE)

    def _serve(self, request: Request) -> None:
        server = self.server
        self.served += 1
        cap = server.limits.max_requests_per_connection
        if cap and self.served >= cap and not request.close:
            request.close = True
            server.metrics.count("closed", "request_cap")
        elif self.framer.upgrade_refused and not self.framer.requests:
            server.metrics.count("closed", "upgrade")
        if server.draining:
            request.close = True
        request.remote_ip = self.remote_ip
        target = request.target
        route = server.routes.get(target if "?" not in target else request.path)
        if route is None:
            if server.app is None:
                self._respond(request, Response(404, b'{"error":"no such path"}'))
            else:
                self._wait(request, self._bridge(request))
            return
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            self._respond(request, Response(405, b'{"error":"method not allowed"}',
                                            headers=(("Allow", allow),)))  # fmt: skip
            return
        try:
            result = route.handler(request)
        except Exception:
            result = self._handler_failed(request)
        if result is None or isinstance(result, (bytes, Response)):
            self._respond(request, result)
        elif isinstance(result, asyncio.Future):  # answered from its done callback, no task
            self.busy = True
            self._flow()
            result.add_done_callback(functools.partial(self._settled, request))
        elif inspect.isawaitable(result):
            self._wait(request, result)
        else:
            self._respond(request, self._handler_failed(request, result))

    def _respond(self, request: Request, result: Result) -> None:
        self.counted -= 1
        self.server.in_flight -= 1
        self.ready_since = time.monotonic()
        close = request.close
        if result is None:  # no answer at all (e.g. past the auction's deadline)
            self.close()
            return
        if isinstance(result, Response):
            close = close or result.close
            result = result.to_bytes(
                close=close,
                keep_alive_10=request.version == "HTTP/1.0",
                head=request.method == "HEAD",
            )
        self.write(result)
        if close:
            self.framer.phase = DONE
            self.framer.requests.clear()
            self.close()

    def _wait(self, request: Request, work: Awaitable[Result]) -> None:
        self.busy = True
        self._flow()
        self.server.run(self._finish(request, work))

    async def _finish(self, request: Request, work: Awaitable[Result]) -> None:
        try:
            result = await work
        except HttpError as exc:
            self._refused(exc)
            return
        except Exception:
            result = self._handler_failed(request)
        self._answered(request, result)

    def _settled(self, request: Request, future: asyncio.Future[Result]) -> None:
        """``_finish`` of a handler's future, called when it is done; a cancelled one closes the
        connection unanswered."""
        try:
            result = None if future.cancelled() else future.result()
        except HttpError as exc:
            self._refused(exc)
            return
        except Exception:
            result = self._handler_failed(request)
        self._answered(request, result)

    def _refused(self, exc: HttpError) -> None:
        """A handler that waited refused its request: not counted, refused on the wire."""
        self.busy = False
        self.counted -= 1
        self.server.in_flight -= 1
        self._refuse(exc)

    def _answered(self, request: Request, result: Result) -> None:
        """A handler that waited has its result: answer it, then the next request."""
        self.busy = False
        self._respond(request, result)
        if not self.closing:
            self._next()
            self._flow()

    async def _bridge(self, request: Request) -> Result:
        app = self.server.app
        assert app is not None
        data, close = await serve_with_application(app, request)
        request.close = request.close or close
        return data

    def _handler_failed(self, request: Request, result: object = None) -> Result:
        self.server.handler_failed(request, result)
        request.close = True
        return Response(500, INTERNAL_ERROR, close=True)

    def _refuse(self, error: HttpError) -> None:
        """A request that cannot be framed or served: answer, shut the write side, and drop
        what still comes for a moment (the framing of anything after it cannot be trusted)."""
        self.server.metrics.count("refused", error.metric)
        self.write(error_response(error.status, error.reason, close=True))
        self._linger()

    def _linger(self) -> None:
        transport = self.transport
        self.framer.phase = DONE
        self.framer.requests.clear()
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            self.close()
            return
        self.linger_since = time.monotonic()
        with contextlib.suppress(OSError, RuntimeError):
            transport.write_eof()
        self.backlogged = self.busy = False
        transport.resume_reading()

    # -- timers ---------------------------------------------------------------------------------

    def expired(self, now: float) -> str | None:
        """The timer that has run out for this connection, if any (the sweeper asks)."""
        if self.linger_since:
            return "linger" if now - self.linger_since > LINGER_S else None
        framer, limits = self.framer, self.server.limits
        if self.write_paused:  # a client that does not read its answers
            stalled = now - self.write_paused_since > limits.idle_timeout_s
            return "write" if stalled else None
        if self.busy or framer.requests:
            return None  # waiting on us, not on the client
        since = max(framer.since, self.ready_since)
        phase = framer.phase
        if phase == HEAD:
            return "head" if now - since > limits.header_timeout_s else None
        if phase == BODY:
            return "body" if now - since > limits.body_timeout_s else None
        if phase == DONE:
            return None
        return "idle" if now - since > limits.idle_timeout_s else None

    def time_out(self, phase: str) -> None:
        if phase == "linger":
            self.abort()
            return
        self.server.metrics.count("timeout", phase)
        if phase == "write":  # nothing more can be written: drop what is queued
            self.abort()
        elif phase == "idle":
            self.close()
        else:
            self.write(error_response(408, f"{phase} not received in time", close=True))
            self._linger()

    # -- flow and closing -----------------------------------------------------------------------

    def _backlog(self, on: bool) -> None:
        if self.backlogged != on:
            self.backlogged = on
            self._flow()

    @property
    def closing(self) -> bool:
        transport = self.transport
        return transport is None or transport.is_closing()

    @property
    def writing(self) -> bool:
        transport = self.transport
        return transport is not None and transport.get_write_buffer_size() > 0

    def _flow(self) -> None:
        """Read while nothing holds this connection up."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.busy or self.write_paused or self.backlogged:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _go_on(self) -> None:
        self._flow()
        if (self.framer.requests or self.framer.phase == DONE) and not self.queued:
            self.queued = True
            self.server.call_soon(self.advance)

    def close(self) -> None:
        """Close once what is written is on the wire."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping anything not yet sent."""
        if self.transport is not None:
            self.transport.abort()


def _discard(data: bytes) -> None:
    """Writes after the connection is gone go nowhere."""


try:
    from fleet.http._connection import Connection as HttpConnection
except ImportError:  # the extension is not built: the reference, a few microseconds slower
    HttpConnection = PyConnection  # type: ignore[misc,assignment]
