"""Servers the bidder is measured against, each in its own process on uvloop, each parsing the
JSON body and writing it back (except the trivial one):

- ``tornado_app``: a ``tornado.web.Application`` with a ``RequestHandler`` (what a Tornado
  service usually is);
- ``tornado_delegate``: a bare Tornado ``HTTPServerConnectionDelegate`` (Tornado's HTTP/1.1
  connection without the web framework);
- ``raw``: an ``asyncio.Protocol`` with llhttp (httptools) and nothing else: the limit for a
  Python process. It answers what ``core`` answers, byte for byte (``python -m bench.bidder``
  checks this before measuring), and closes when the request asks to (``Connection: close``);
- ``core``: a route of the fleet's HTTP core (fleet/http), what the bidder runs on;
- ``trivial``: a 204 to every request without reading it (the load generator's ceiling).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import msgspec


def _run(main: Any) -> None:
    import uvloop

    uvloop.run(main())


def tornado_app(port: int) -> None:
    from tornado import web

    class Echo(web.RequestHandler):
        def post(self) -> None:
            doc = msgspec.json.decode(self.request.body)
            self.set_header("Content-Type", "application/json")
            self.write(msgspec.json.encode(doc))

    async def main() -> None:
        app = web.Application([(r"/openrtb2/bid", Echo)], log_function=lambda h: None)
        app.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    _run(main)


def tornado_delegate(port: int) -> None:
    from tornado import httputil
    from tornado.httpserver import HTTPServer

    class Message(httputil.HTTPMessageDelegate):
        def __init__(self, connection: httputil.HTTPConnection) -> None:
            self.connection = connection
            self.chunks: list[bytes] = []

        def data_received(self, chunk: bytes) -> None:
            self.chunks.append(chunk)

        def finish(self) -> None:
            body = msgspec.json.encode(msgspec.json.decode(b"".join(self.chunks)))
            headers = httputil.HTTPHeaders(
                {"Content-Type": "application/json", "Content-Length": str(len(body))}
            )
            self.connection.write_headers(
                httputil.ResponseStartLine("HTTP/1.1", 200, "OK"), headers, body
            )
            self.connection.finish()

    class Delegate(httputil.HTTPServerConnectionDelegate):
        def start_request(
            self, server_conn: object, request_conn: httputil.HTTPConnection
        ) -> httputil.HTTPMessageDelegate:
            return Message(request_conn)

    async def main() -> None:
        HTTPServer(Delegate()).listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    _run(main)


_RAW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_RAW_HEAD_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n"
)


class _Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        body = msgspec.json.encode(msgspec.json.decode(b"".join(self.body)))
        self.body = []
        if self.parser.should_keep_alive():
            self.transport.write(_RAW_HEAD % len(body) + body)
        else:
            self.transport.write(_RAW_HEAD_CLOSE % len(body) + body)
            self.transport.close()


def raw(port: int) -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_server(_Raw, "127.0.0.1", port)
        await asyncio.Event().wait()

    _run(main)


def core(port: int) -> None:
    """The same JSON echo as a route of the fleet's HTTP core (fleet/http): llhttp, the framer,
    the limits and timers, one write per answer; what the core costs over ``raw``."""
    from prometheus_client import CollectorRegistry

    from fleet.http import HttpLimits, HttpMetrics, HttpServer, Request, Response

    def echo(request: Request) -> Response:
        return Response(200, msgspec.json.encode(msgspec.json.decode(request.body)))

    async def main() -> None:
        server = HttpServer(HttpLimits(), metrics=HttpMetrics(CollectorRegistry()))
        server.route("/openrtb2/bid", echo, methods=("POST",))
        await server.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    _run(main)


class _Trivial(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def trivial(port: int) -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_server(_Trivial, "127.0.0.1", port)
        await asyncio.Event().wait()

    _run(main)


SERVERS = {
    "tornado_app": tornado_app,
    "tornado_delegate": tornado_delegate,
    "raw": raw,
    "core": core,
    "trivial": trivial,
}
