"""The bidder's HTTP server: a lean bid path on the event loop's own transports (uvloop's, in
C), and an ordinary ``tornado.web.Application`` for everything else.

``POST /openrtb2/bid`` is framed by bidder/http1.py from the bytes an ``asyncio.Protocol``
receives (one write per answer) and answered by ``BidEndpoint``; any other request is handed,
through Tornado's own ``HTTPConnection``/``HTTPMessageDelegate`` interfaces, to the Application
that serves ``GET /healthz``, ``/readyz`` and ``/metrics`` (404 and 405 included). A protocol
rather than Tornado's ``IOStream``: no read or write future and no Python-level ``recv`` per
request, about half the time per request on the HTTP side.

Timeouts without a timer per request: every connection records what it waits for and since
when, and one sweeper task closes those idle past ``idle_timeout`` or stuck in a body past
``body_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

from tornado import httputil, netutil, web
from tornado.concurrent import Future

from bidder.http1 import (
    STATUS_TEXT,
    ChunkedDecoder,
    HttpError,
    RequestHead,
    parse_head,
    response_bytes,
)

log = logging.getLogger("bidder.app")

BID_PATH = "/openrtb2/bid"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 256 * 1024
    max_drain_bytes: int = 32 * 1024 * 1024
    idle_timeout: float = 120.0
    body_timeout: float = 5.0


class BidHandler(Protocol):
    """What the server needs from the bid endpoint (bidder.endpoint.BidEndpoint)."""

    def begin(self, in_flight: int) -> str | None:
        """A request's head arrived: None to serve it, else the reason to shed it."""

    def arrival_correction(self) -> float:
        """Seconds the request probably waited before the loop saw it (event-loop lag)."""

    def serve(
        self,
        head: RequestHead,
        body: bytes,
        *,
        arrival: float,
        shed: str | None,
        remote_ip: str,
        close: bool,
        write: Callable[[bytes], Any],
    ) -> bool:
        """Answer one bid request through ``write``; True to close the connection unanswered."""

    def refuse(
        self,
        head: RequestHead,
        status: int,
        reason: str,
        *,
        close: bool,
        write: Callable[[bytes], Any],
    ) -> None:
        """Answer a bid request that could not be read (413, 400 ...)."""


class _Connection(asyncio.Protocol):
    """One client connection: bytes in through ``data_received``; each request is framed and
    answered from the loop's ready queue once complete (pipelined ones one per iteration).

    Reading stops while the Application answers a request, while pipelined requests wait their
    turn, and while the peer does not read its answers (the write buffer's high-water mark is
    zero: anything the kernel would not take pauses this connection until it has), so that
    nothing is buffered without bound."""

    __slots__ = (
        "arrival",
        "backlogged",
        "body_left",
        "bridging",
        "buf",
        "busy_since",
        "chunks",
        "counted",
        "head",
        "idle_since",
        "is_bid",
        "queued",
        "remote_ip",
        "server",
        "shed",
        "too_large",
        "transport",
        "write",
        "write_paused",
    )

    def __init__(self, server: BidderHTTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.write: Callable[[bytes], Any] = _discard
        self.remote_ip = ""
        self.buf = bytearray()
        self.idle_since = time.monotonic()
        self.busy_since: float | None = None  # set while a request is being read or answered
        self.bridging = False  # the Application is answering a request
        self.write_paused = False  # the peer is not reading its answers
        self.queued = False  # _advance is scheduled
        self.backlogged = False  # ... for a request that was buffered behind another
        # the request whose body is being read
        self.head: RequestHead | None = None
        self.is_bid = False
        self.counted = False  # counted in the server's in_flight
        self.arrival = 0.0
        self.shed: str | None = None
        self.body_left = 0  # bytes of an oversized body still to throw away
        self.chunks: ChunkedDecoder | None = None
        self.too_large = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.write = transport.write
        address = transport.get_extra_info("peername")
        self.remote_ip = address[0] if isinstance(address, tuple) and address else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=0)
        self.server.connections_open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections_open.discard(self)
        self._uncount()
        self.write = _discard

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.bridging or self.write_paused:
            return
        if not self.queued:
            # Served from the loop's ready queue, as a coroutine would be: the lag probe then
            # runs between reading requests and serving them, as load shedding expects.
            self.queued = True
            self.server.call_soon(self._advance)
        elif not self.backlogged:  # more before the last bytes were served: wait for them
            self.backlogged = True
            self._flow()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._go_on()

    # -- framing ------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Frame and answer the next request in the buffer when it is complete. Another one
        behind it (pipelined) waits for the next loop iteration, reading paused meanwhile, so
        that one client's burst neither holds up the other connections nor fills the buffer
        without bound."""
        self.queued = False
        was_backlogged, self.backlogged = self.backlogged, False
        if self.bridging or self.write_paused or self.closing:
            return
        try:
            if self.head is None and not self._read_head():
                return
            if not self._read_body():
                return
            self._answer()
            if self.buf and not (self.bridging or self.write_paused or self.closing):
                self.queued = self.backlogged = True
                self.server.call_soon(self._advance)
        except HttpError as exc:
            self._fail(exc)
        except Exception:
            log.exception("connection from %s failed", self.remote_ip)
            self.abort()
        finally:
            if self.backlogged != was_backlogged:
                self._flow()

    def _read_head(self) -> bool:
        """True when a head is parsed (and its body may be read); False when more is needed."""
        buf, server = self.buf, self.server
        limits = server.limits
        while buf.startswith(b"\r\n"):  # stray CRLFs between requests are allowed
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > limits.max_header_bytes:
                raise HttpError(431, "request head too large")
            if buf:  # part of a head: the body timeout applies (no slow drip of bytes)
                self.busy_since = self.busy_since or time.monotonic()
            return False
        now = time.monotonic()
        self.busy_since = now
        if end > limits.max_header_bytes:
            raise HttpError(431, "request head too large")
        head = parse_head(bytes(buf[:end]))
        del buf[: end + 4]
        self.head = head
        self.too_large = False
        self.chunks = None
        self.body_left = 0
        self.is_bid = head.method == "POST" and (head.target == BID_PATH or head.path == BID_PATH)
        if self.is_bid:
            server.in_flight += 1
            self.counted = True
            handler = server.handler
            self.shed = handler.begin(server.in_flight)
            self.arrival = now - handler.arrival_correction()
        self._start_body(head)
        return True

    def _start_body(self, head: RequestHead) -> None:
        """Decide how the body is read; refuse at once what is too large to drain."""
        limits, buf = self.server.limits, self.buf
        if head.chunked:
            self.chunks = ChunkedDecoder(limits.max_body_bytes)
            if head.expects_continue and not buf:
                self.write(_CONTINUE)
            return
        n = head.content_length
        if n > limits.max_drain_bytes:
            raise HttpError(413, "request body too large")
        if head.expects_continue and len(buf) < n:
            if n > limits.max_body_bytes:
                raise HttpError(413, "request body too large")
            self.write(_CONTINUE)
        if n > limits.max_body_bytes:  # read exactly that much, so the next request stays intact
            self.too_large = True
            self.body_left = n

    def _read_body(self) -> bool:
        """True when the body is complete (``_answer`` takes it from the buffer)."""
        buf = self.buf
        chunks = self.chunks
        if chunks is not None:
            if chunks.feed(buf):
                return True
            if chunks.size > self.server.limits.max_drain_bytes:
                raise HttpError(413, "request body too large")
            return False
        if self.too_large:
            have = min(len(buf), self.body_left)
            del buf[:have]
            self.body_left -= have
            return self.body_left == 0
        head = self.head
        assert head is not None
        return len(buf) >= head.content_length

    def _answer(self) -> None:
        head, server, buf = self.head, self.server, self.buf
        assert head is not None
        self.head = None
        chunks = self.chunks
        if chunks is not None:
            body, too_large = bytes(chunks.body), chunks.too_large
        elif self.too_large:
            body, too_large = b"", True
        else:
            n = head.content_length
            body, too_large = bytes(buf[:n]), False
            del buf[:n]
        close = not head.keep_alive or server.draining
        if not self.is_bid:
            if too_large:
                self.write(_error_response(413, "request body too large", close=close))
                self._done(close)
            else:
                self.bridging = True
                self._flow()
                server.run(self._bridge(head, body, close))
            return
        handler = server.handler
        try:
            if too_large:
                handler.refuse(head, 413, "request body too large", close=close, write=self.write)
            elif handler.serve(
                head,
                body,
                arrival=self.arrival,
                shed=self.shed,
                remote_ip=self.remote_ip,
                close=close,
                write=self.write,
            ):
                close = True  # past tmax: no answer at all
        finally:
            self._uncount()
        self._done(close)

    def _done(self, close: bool) -> None:
        """A request answered: close when asked (once the answer is on the wire)."""
        self.busy_since = None
        self.idle_since = time.monotonic()
        if close:
            self.close()

    def _fail(self, exc: HttpError) -> None:
        """A request that cannot be read: answer and close (its framing cannot be trusted)."""
        head = self.head
        if head is not None and self.is_bid:
            self.server.handler.refuse(head, exc.status, exc.reason, close=True, write=self.write)
        else:
            self.write(_error_response(exc.status, exc.reason, close=True))
        self.head = None
        self._uncount()
        self.close()

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.server.in_flight -= 1

    async def _bridge(self, head: RequestHead, body: bytes, close: bool) -> None:
        """Serve one request through the Application, then go on reading."""
        server = self.server
        try:
            headers = httputil.HTTPHeaders.parse(head.block.decode("latin-1"))
            start_line = httputil.RequestStartLine(head.method, head.target, head.version)
            bridge = _BridgeConnection(self, head, close)
            delegate = server.app.start_request(server, bridge)
            pending = delegate.headers_received(start_line, headers)
            if pending is not None:
                await pending
            if body:
                pending = delegate.data_received(body)
                if pending is not None:
                    await pending
            delegate.finish()
            await bridge.done
        except httputil.HTTPInputError as exc:  # e.g. HTTP/1.1 without a Host header
            self.bridging = False
            self._fail(HttpError(400, str(exc)))
            return
        except Exception:
            log.exception("connection from %s failed", self.remote_ip)
            self.abort()
            return
        self.bridging = False
        self._done(bridge.must_close)
        self._go_on()

    # -- flow and closing ---------------------------------------------------------------------

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
        if self.bridging or self.write_paused or self.backlogged:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _go_on(self) -> None:
        """What held the connection up is over: read again, and serve what is buffered."""
        self._flow()
        if self.buf and not (self.queued or self.closing):
            self._advance()

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


def _unstarted(callback: Callable[[], None]) -> object:
    raise RuntimeError("the server is not listening")


class BidderHTTPServer:
    """One process's server. ``listen_reuse_port`` binds with SO_REUSEPORT so that every server
    process binds the same port and the kernel spreads connections; ``shutdown`` drains."""

    def __init__(
        self, handler: BidHandler, app: web.Application, limits: HttpLimits | None = None
    ) -> None:
        self.limits = limits or HttpLimits()
        self.handler = handler
        self.app = app
        self.draining = False
        self.in_flight = 0
        self.connections_open: set[_Connection] = set()
        self._listeners: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.call_soon: Callable[[Callable[[], None]], object] = _unstarted
        self.sockets: list[socket.socket] = []

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        """A task that outlives the call (held here until done: the loop keeps weak ones)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def listen_reuse_port(self, port: int, host: str, backlog: int = 2048) -> int:
        """Bind and start accepting; returns the port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self.call_soon = loop.call_soon
        self.sockets = netutil.bind_sockets(port, host, backlog=backlog, reuse_port=True)
        for sock in self.sockets:
            listener = await loop.create_server(
                lambda: _Connection(self), sock=sock, backlog=backlog
            )
            self._listeners.append(listener)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), name="sweeper")
        return int(self.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self.connections_open)

    async def _sweep(self) -> None:
        limits = self.limits
        while True:
            await asyncio.sleep(min(1.0, limits.body_timeout / 2, limits.idle_timeout / 2))
            now = time.monotonic()
            for conn in list(self.connections_open):
                busy = conn.busy_since
                if (busy is not None and now - busy > limits.body_timeout) or (
                    busy is None and now - conn.idle_since > limits.idle_timeout
                ):
                    conn.abort()

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting; let requests under way finish (answers say ``Connection: close``);
        close idle connections at once and everything after ``drain_timeout``."""
        for listener in self._listeners:
            listener.close()
        self.draining = True
        deadline = time.monotonic() + drain_timeout
        while self.connections_open and time.monotonic() < deadline:
            for conn in list(self.connections_open):
                if conn.busy_since is None and not conn.writing:
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


def _error_response(status: int, reason: str, *, close: bool) -> bytes:
    body = b'{"error":"%s"}' % reason.encode("ascii", "replace").replace(b'"', b"'")
    return response_bytes(status, body, close=close)


class _Context:
    __slots__ = ("protocol", "remote_ip")

    def __init__(self, remote_ip: str) -> None:
        self.remote_ip = remote_ip
        self.protocol = "http"


class _BridgeConnection(httputil.HTTPConnection):
    """Tornado's HTTPConnection interface over our connection, for one request of the Application:
    the answer is buffered and written whole at ``finish`` (with a Content-Length)."""

    def __init__(self, conn: _Connection, head: RequestHead, close: bool) -> None:
        self.conn = conn
        self.context = _Context(conn.remote_ip)
        self.head = head
        self.must_close = close
        self.done: Future[None] = Future()
        self._start: httputil.ResponseStartLine | None = None
        self._headers: httputil.HTTPHeaders | None = None
        self._chunks: list[bytes] = []
        self._close_callback: Callable[[], None] | None = None

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self._start, self._headers = start_line, headers
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> Future[None]:
        if chunk:
            self._chunks.append(chunk)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def finish(self) -> None:
        if self.done.done():
            return
        start, headers = self._start, self._headers
        assert start is not None and headers is not None
        body = b"".join(self._chunks)
        code = start.code
        if headers.get("Connection", "").lower() == "close":
            self.must_close = True
        lines = [f"HTTP/1.1 {code} {start.reason or STATUS_TEXT.get(code, 'Status')}"]
        for name, value in headers.get_all():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                lines.append(f"{name}: {value}")
        if code != 204 and code != 304 and code >= 200:
            lines.append(f"Content-Length: {len(body)}")
        if self.must_close:
            lines.append("Connection: close")
        elif self.head.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.head.method != "HEAD" and code not in (204, 304):
            data += body
        if not self.conn.closing:
            self.conn.write(data)
        self.done.set_result(None)


# -- the Application: health, readiness, metrics ------------------------------------------------


class _Base(web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason})

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})


class HealthHandler(_Base):
    def get(self) -> None:
        self.write({"status": "ok"})


class ReadyHandler(_Base):
    def initialize(self, ready: Callable[[], dict[str, bool]]) -> None:
        self.ready = ready

    def get(self) -> None:
        parts = self.ready()
        self.set_status(200 if all(parts.values()) else 503)
        self.write({"ready": all(parts.values()), **parts})


class MetricsHandler(_Base):
    def initialize(self, exposition: Callable[[], bytes]) -> None:
        self.exposition = exposition

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.write(self.exposition())


class BidMethodHandler(_Base):
    """The bid path with a method other than POST (POST itself never gets here)."""

    def prepare(self) -> None:
        self.set_header("Allow", "POST")
        self.fail(405, "use POST")


class NotFoundHandler(_Base):
    def prepare(self) -> None:
        self.fail(404, "no such path")


def _quiet(handler: web.RequestHandler) -> None:
    """Probes and scrapes are not worth a log line; failures are counted elsewhere."""
    if handler.get_status() >= 500:
        log.warning(
            "%s %s -> %d", handler.request.method, handler.request.uri, handler.get_status()
        )


def make_application(
    *, ready: Callable[[], dict[str, bool]], exposition: Callable[[], bytes]
) -> web.Application:
    return web.Application(
        [
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler, {"ready": ready}),
            (r"/metrics", MetricsHandler, {"exposition": exposition}),
            (BID_PATH, BidMethodHandler),
        ],
        default_handler_class=NotFoundHandler,
        log_function=_quiet,
        compress_response=True,
    )
