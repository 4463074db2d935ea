"""Serve one request with a ``tornado.web.Application``: the fallback for paths without a route.

Tornado's own ``HTTPConnection`` / ``HTTPMessageDelegate`` interfaces over a framed
``Request``; the answer is buffered and returned whole (one write, with a Content-Length).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tornado import httputil, web
from tornado.concurrent import Future

from fleet.http.errors import HttpError
from fleet.http.framing import Request
from fleet.http.wire import STATUS_TEXT


class _Context:
    __slots__ = ("protocol", "remote_ip")

    def __init__(self, remote_ip: str) -> None:
        self.remote_ip = remote_ip
        self.protocol = "http"


class _Server(httputil.HTTPServerConnectionDelegate):
    """What ``Application.start_request`` is handed as the server (it only needs identity)."""


_SERVER = _Server()


class _BridgeConnection(httputil.HTTPConnection):
    def __init__(self, request: Request) -> None:
        self.request = request
        self.context = _Context(request.remote_ip)
        self.must_close = request.close
        self.done: Future[bytes] = Future()
        self._start: httputil.ResponseStartLine | None = None
        self._headers: httputil.HTTPHeaders | None = None
        self._chunks: list[bytes] = []

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        pass  # the answer is written whole: there is nothing to abandon half-way

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
        bodiless = code in (204, 304) or code < 200
        if not bodiless:
            lines.append(f"Content-Length: {len(body)}")
        if self.must_close:
            lines.append("Connection: close")
        elif self.request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.request.method != "HEAD" and not bodiless:
            data += body
        self.done.set_result(data)


async def serve_with_application(app: web.Application, request: Request) -> tuple[bytes, bool]:
    """The Application's whole answer to ``request``, and whether it closes the connection.
    HttpError(400) when Tornado refuses the request (e.g. HTTP/1.1 without a Host header)."""
    try:
        headers = httputil.HTTPHeaders()
        for name, value in request.raw_headers:
            headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
        start_line = httputil.RequestStartLine(request.method, request.target, request.version)
        bridge = _BridgeConnection(request)
        delegate = app.start_request(_SERVER, bridge)
        pending: Any = delegate.headers_received(start_line, headers)
        if pending is not None:
            await pending
        if request.body:
            pending = delegate.data_received(request.body)
            if pending is not None:
                await pending
        delegate.finish()
        data = await bridge.done
    except httputil.HTTPInputError as exc:
        raise HttpError(400, str(exc)) from None
    return data, bridge.must_close
