"""The bidder's HTTP server: Tornado's TCPServer and IOStream, a lean bid path, and an ordinary
``tornado.web.Application`` for everything else.

``POST /openrtb2/bid`` is framed by bidder/http1.py straight off the connection's IOStream (one
read per batch of bytes, one write per answer) and answered by ``BidEndpoint``; any other request
is handed, through Tornado's own ``HTTPConnection``/``HTTPMessageDelegate`` interfaces, to the
Application that serves ``GET /healthz``, ``/readyz`` and ``/metrics`` (404 and 405 included).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tornado import httputil, iostream, netutil, web
from tornado.concurrent import Future
from tornado.tcpserver import TCPServer

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
_READ_CHUNK = 65536
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


class _Conn:
    __slots__ = ("address", "busy_since", "idle_since", "remote_ip", "stream")

    def __init__(self, stream: iostream.IOStream, address: Any) -> None:
        self.stream = stream
        self.address = address
        self.remote_ip = address[0] if isinstance(address, tuple) and address else ""
        self.idle_since = time.monotonic()
        self.busy_since: float | None = None  # set while a request is being read


class BidderHTTPServer(TCPServer):
    """One process's server. ``listen_reuse_port`` binds with SO_REUSEPORT so that every server
    process binds the same port and the kernel spreads connections; ``shutdown`` drains."""

    def __init__(
        self, handler: BidHandler, app: web.Application, limits: HttpLimits | None = None
    ) -> None:
        self.limits = limits or HttpLimits()
        super().__init__(max_buffer_size=max(self.limits.max_drain_bytes, 8 * 1024 * 1024))
        self.handler = handler
        self.app = app
        self.draining = False
        self.in_flight = 0
        self._conns: set[_Conn] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.sockets: list[socket.socket] = []

    def listen_reuse_port(self, port: int, host: str, backlog: int = 2048) -> int:
        """Bind and start accepting; returns the port (useful with port 0)."""
        self.sockets = netutil.bind_sockets(port, host, backlog=backlog, reuse_port=True)
        self.add_sockets(self.sockets)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sweeper")
        return int(self.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def handle_stream(self, stream: iostream.IOStream, address: Any) -> None:
        conn = _Conn(stream, address)
        self._conns.add(conn)
        try:
            stream.set_nodelay(True)
            await self._serve(conn)
        except iostream.StreamClosedError:
            pass
        except Exception:
            log.exception("connection from %s failed", conn.remote_ip)
            stream.close()
        finally:
            self._conns.discard(conn)

    async def _serve(self, conn: _Conn) -> None:
        stream, limits = conn.stream, self.limits
        buf = bytearray()
        while True:
            # -- the head ------------------------------------------------------------------
            while buf[:2] == b"\r\n":  # stray CRLFs between requests are allowed
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > limits.max_header_bytes:
                    stream.write(_error_response(431, "request head too large", close=True))
                    stream.close()
                    return
                if buf:  # part of a head: the body timeout applies (no slow drip of bytes)
                    conn.busy_since = conn.busy_since or time.monotonic()
                else:
                    conn.idle_since = time.monotonic()
                buf += await stream.read_bytes(_READ_CHUNK, partial=True)
                while buf[:2] == b"\r\n":
                    del buf[:2]
                end = buf.find(b"\r\n\r\n")
            now = time.monotonic()
            conn.busy_since = now
            if end > limits.max_header_bytes:
                stream.write(_error_response(431, "request head too large", close=True))
                stream.close()
                return
            try:
                head = parse_head(bytes(buf[:end]))
            except HttpError as exc:
                stream.write(_error_response(exc.status, exc.reason, close=True))
                stream.close()
                return
            del buf[: end + 4]
            is_bid = head.path == BID_PATH and head.method == "POST"
            if is_bid:
                self.in_flight += 1
                try:
                    close = await self._bid(conn, head, buf, now)
                finally:
                    self.in_flight -= 1
                conn.busy_since = None
                if close:
                    return
                continue
            # -- anything else: the Application ----------------------------------------------
            try:
                body, too_large = await self._read_body(conn, head, buf)
            except HttpError as exc:
                stream.write(_error_response(exc.status, exc.reason, close=True))
                stream.close()
                return
            close = not head.keep_alive or self.draining
            if too_large:
                stream.write(_error_response(413, "request body too large", close=close))
            else:
                close = await self._bridge(conn, head, body, close) or close
            conn.busy_since = None
            if await self._after_answer(stream, close):
                return

    async def _after_answer(self, stream: iostream.IOStream, close: bool) -> bool:
        """Close when asked (after the answer is on the wire); True when closed."""
        if close:
            if stream.writing():
                with contextlib.suppress(iostream.StreamClosedError):
                    await stream.write(b"")
            stream.close()
            return True
        if stream.writing():
            # The peer is not reading its answers: wait rather than buffer without bound.
            await stream.write(b"")
        return False

    async def _bid(self, conn: _Conn, head: RequestHead, buf: bytearray, now: float) -> bool:
        """One bid request, from its head on; True when the connection is closed."""
        stream, handler = conn.stream, self.handler
        shed = handler.begin(self.in_flight)
        arrival = now - handler.arrival_correction()
        try:
            body, too_large = await self._read_body(conn, head, buf)
        except HttpError as exc:
            handler.refuse(head, exc.status, exc.reason, close=True, write=stream.write)
            stream.close()
            return True
        close = not head.keep_alive or self.draining
        if too_large:
            handler.refuse(head, 413, "request body too large", close=close, write=stream.write)
        elif handler.serve(
            head,
            body,
            arrival=arrival,
            shed=shed,
            remote_ip=conn.remote_ip,
            close=close,
            write=stream.write,
        ):
            stream.close()  # past tmax: no answer at all
            return True
        return await self._after_answer(stream, close)

    async def _read_body(
        self, conn: _Conn, head: RequestHead, buf: bytearray
    ) -> tuple[bytes, bool]:
        """(body, too_large); an oversized body is read and thrown away, up to the drain limit."""
        stream, limits = conn.stream, self.limits
        if head.chunked:
            decoder = ChunkedDecoder(limits.max_body_bytes)
            if head.expects_continue and not buf:
                stream.write(_CONTINUE)
            while not decoder.feed(buf):
                if decoder.size > limits.max_drain_bytes:
                    raise HttpError(413, "request body too large")
                buf += await stream.read_bytes(_READ_CHUNK, partial=True)
            return bytes(decoder.body), decoder.too_large
        n = head.content_length
        if n > limits.max_drain_bytes:
            raise HttpError(413, "request body too large")
        if head.expects_continue and len(buf) < n:
            if n > limits.max_body_bytes:
                raise HttpError(413, "request body too large")
            stream.write(_CONTINUE)
        if n > limits.max_body_bytes:
            have = min(len(buf), n)
            del buf[:have]
            left = n - have
            while left > 0:  # read exactly the rest, so the next request stays intact
                left -= len(await stream.read_bytes(min(left, _READ_CHUNK), partial=True))
            return b"", True
        while len(buf) < n:
            buf += await stream.read_bytes(max(n - len(buf), _READ_CHUNK), partial=True)
        body = bytes(buf[:n])
        del buf[:n]
        return body, False

    async def _bridge(self, conn: _Conn, head: RequestHead, body: bytes, close: bool) -> bool:
        """Serve one request through the Application; True when the connection must close."""
        headers = httputil.HTTPHeaders.parse(head.block.decode("latin-1"))
        start_line = httputil.RequestStartLine(head.method, head.target, head.version)
        bridge = _BridgeConnection(conn, head, close)
        delegate = self.app.start_request(self, bridge)
        pending = delegate.headers_received(start_line, headers)
        if pending is not None:
            await pending
        if body:
            pending = delegate.data_received(body)
            if pending is not None:
                await pending
        delegate.finish()
        await bridge.done
        return bridge.must_close

    async def _sweep(self) -> None:
        limits = self.limits
        while True:
            await asyncio.sleep(min(1.0, limits.body_timeout / 2, limits.idle_timeout / 2))
            now = time.monotonic()
            for conn in list(self._conns):
                busy = conn.busy_since
                if (busy is not None and now - busy > limits.body_timeout) or (
                    busy is None and now - conn.idle_since > limits.idle_timeout
                ):
                    conn.stream.close()

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting; let requests under way finish (answers say ``Connection: close``);
        close idle connections at once and everything after ``drain_timeout``."""
        self.stop()
        self.draining = True
        deadline = time.monotonic() + drain_timeout
        while self._conns and time.monotonic() < deadline:
            for conn in list(self._conns):
                if conn.busy_since is None and not conn.stream.writing():
                    conn.stream.close()
            await asyncio.sleep(0.02)
        for conn in list(self._conns):
            conn.stream.close()
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
    """Tornado's HTTPConnection interface over our stream, for one request of the Application:
    the answer is buffered and written whole at ``finish`` (with a Content-Length)."""

    def __init__(self, conn: _Conn, head: RequestHead, close: bool) -> None:
        self.stream = conn.stream
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
        if not self.stream.closed():
            self.stream.write(data)
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
