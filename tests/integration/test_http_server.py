"""The HTTP core's server (fleet.http.HttpServer) on a loopback port: routes, the Tornado
fallback, pipelining, the timers, the caps, and what they count. Every test runs twice: over
the compiled connection (fleet/http/_connection.pyx) and over its reference
(``connection.PyConnection``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest_bidder import RawClient, run_uv
from prometheus_client import CollectorRegistry
from tornado import web

from fleet.http import HttpLimits, HttpMetrics, HttpServer, Request, Response
from fleet.http.connection import HttpConnection, PyConnection

FAST = HttpLimits(header_timeout_s=0.3, body_timeout_s=0.3, idle_timeout_s=0.6)
_CONNECTION: list[Any] = [HttpConnection]


@pytest.fixture(autouse=True, params=["compiled", "reference"])
def connection_class(request: pytest.FixtureRequest) -> Any:
    """The connection every server of the test is made with."""
    if request.param == "compiled":
        pytest.importorskip("fleet.http._connection", reason="the extension is not built")
        _CONNECTION[0] = HttpConnection
    else:
        _CONNECTION[0] = PyConnection
    return _CONNECTION[0]


def test_the_compiled_connection_is_the_one_in_use() -> None:
    compiled = pytest.importorskip("fleet.http._connection", reason="the extension is not built")
    assert HttpConnection is compiled.Connection


class _Hello(web.RequestHandler):
    def get(self) -> None:
        self.write({"from": "tornado"})


@contextlib.asynccontextmanager
async def serving(limits: HttpLimits = FAST, **kwargs: Any) -> AsyncIterator[HttpServer]:
    registry = CollectorRegistry()
    app = kwargs.pop("app", web.Application([(r"/tornado", _Hello)]))
    kwargs.setdefault("connection", _CONNECTION[0])
    server = HttpServer(limits, metrics=HttpMetrics(registry), app=app, **kwargs)
    server.registry = registry  # type: ignore[attr-defined]
    gate = asyncio.Event()

    def hello(request: Request) -> Response:
        return Response(200, b'{"path":"%s"}' % request.path.encode())

    async def slow(request: Request) -> Response:
        await gate.wait()
        return Response(200, request.body)

    def pixel(request: Request) -> Response:
        return Response(200, b"GIF89a", content_type=b"image/gif")

    def redirect(request: Request) -> Response:
        return Response(302, headers=(("Location", "https://example.com/" + request.query),))

    def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    server.route("/hello", hello, methods=("GET", "POST"))
    server.route("/slow", slow, methods=("POST",))
    server.route("/imp", pixel)
    server.route("/click", redirect)
    server.route("/win", lambda request: Response(204))
    server.route("/bytes", lambda r: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    server.route("/drop", lambda request: None)
    server.route("/broken", broken)
    server.route("/large", lambda request: Response(200, b"x" * 1_000_000))
    server.gate = gate  # type: ignore[attr-defined]
    await server.listen(0, "127.0.0.1")
    try:
        yield server
    finally:
        gate.set()
        await server.shutdown(1.0)


def port(server: HttpServer) -> int:
    return int(server.sockets[0].getsockname()[1])


def sample(server: HttpServer, name: str, **labels: str) -> float:
    server.metrics.fold()
    registry: CollectorRegistry = server.registry  # type: ignore[attr-defined]
    return registry.get_sample_value(name, labels) or 0.0


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_routes_answers_and_the_fallback() -> None:
    async def scenario() -> None:
        async with serving() as server:
            c = RawClient(port(server))
            assert (await c.request("GET", "/hello?x=1")).json() == {"path": "/hello"}
            gif = await c.request("GET", "/imp")
            assert gif.status == 200 and gif.headers["content-type"] == "image/gif"
            moved = await c.request("GET", "/click?a=b")
            assert moved.status == 302 and moved.headers["location"] == "https://example.com/a=b"
            assert (await c.request("GET", "/win")).status == 204
            assert (await c.request("GET", "/bytes")).body == b"ok"
            wrong = await c.request("DELETE", "/imp")
            assert wrong.status == 405 and wrong.headers["allow"] == "GET, HEAD"
            assert (await c.request("GET", "/tornado")).json() == {"from": "tornado"}
            assert (await c.request("GET", "/nowhere")).status == 404  # Tornado's 404
            await c.close()
            dropped = RawClient(port(server))
            await dropped.send(get("/drop"))
            assert await dropped.closed_by_peer()
            await dropped.close()
            broken = RawClient(port(server))
            reply = await broken.request("GET", "/broken")
            assert reply.status == 500 and reply.headers["connection"] == "close"
            assert sample(server, "fleet_http_closed_total", reason="handler_error") == 1
            await broken.close()

    run_uv(scenario())


def test_head_answers_carry_no_body() -> None:
    async def scenario() -> None:
        async with serving(app=None) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
            writer.write(b"HEAD /imp HTTP/1.1\r\nHost: t\r\n\r\n" + get("/nowhere"))
            data = b""
            while data.count(b"HTTP/1.1") < 2 or not data.endswith(b"}"):
                data += await asyncio.wait_for(reader.read(4096), 5)
            first, _, second = data.partition(b"HTTP/1.1 404")
            assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"\r\n\r\n")
            assert b"Content-Length: 6\r\n" in first and b"GIF" not in first
            assert b'"no such path"' in second  # no Application: the core's own 404
            writer.close()

    run_uv(scenario())


def test_pipelined_requests_are_answered_in_order_and_counted_in_flight_when_complete() -> None:
    async def scenario() -> None:
        async with serving() as server:
            slow_bodies = [RawClient(port(server)) for _ in range(5)]
            for c in slow_bodies:  # heads and part of a body: not in flight
                await c.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
            c = RawClient(port(server))
            body = b'{"n":1}'
            one = b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n" + body
            await c.send(one + get("/hello") + get("/tornado") + get("/win"))
            for _ in range(100):
                if server.in_flight:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert server.in_flight == 4  # complete requests only, the three queued included
            server.gate.set()  # type: ignore[attr-defined]
            answers = [await c.reply() for _ in range(4)]
            assert [a.status for a in answers] == [200, 200, 200, 204]
            assert answers[0].body == body and answers[1].json() == {"path": "/hello"}
            assert answers[2].json() == {"from": "tornado"}
            assert server.in_flight == 0
            for slow in slow_bodies:
                await slow.close()
            await c.close()

    run_uv(scenario())


def test_a_future_is_answered_from_its_done_callback_without_a_task() -> None:
    """A handler may answer with an ``asyncio.Future`` (one batch settling many requests):
    each is answered when its future is done, in order on its connection, counted in flight
    until then, with no task per request; a future that fails is a 500, a cancelled one closes
    the connection unanswered."""

    async def scenario() -> None:
        async with serving() as server:
            loop = asyncio.get_running_loop()
            waiting: list[tuple[Request, asyncio.Future[Response]]] = []

            def later(request: Request) -> asyncio.Future[Response]:
                future: asyncio.Future[Response] = loop.create_future()
                waiting.append((request, future))
                return future

            server.route("/later", later)
            tasks_before = len(asyncio.all_tasks())
            clients = [RawClient(port(server)) for _ in range(3)]
            for i, c in enumerate(clients):
                await c.send(get(f"/later?n={i}") + get("/hello"))
            for _ in range(100):
                if len(waiting) == 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert len(waiting) == 3 and server.in_flight == 6  # the queued /hello included
            assert len(asyncio.all_tasks()) == tasks_before
            for request, future in waiting:  # one batch settles all three
                future.set_result(Response(200, request.query.encode()))
            for i, c in enumerate(clients):
                first, second = await c.reply(), await c.reply()
                assert (first.status, first.body) == (200, f"n={i}".encode())
                assert second.json() == {"path": "/hello"}
            assert server.in_flight == 0
            waiting.clear()
            failing, cancelled = RawClient(port(server)), RawClient(port(server))
            await failing.send(get("/later"))
            await cancelled.send(get("/later"))
            for _ in range(100):
                if len(waiting) == 2:
                    break
                await asyncio.sleep(0.01)
            waiting[0][1].set_exception(RuntimeError("a bug"))
            waiting[1][1].cancel()
            assert (await failing.reply()).status == 500
            assert await cancelled.closed_by_peer()
            assert sample(server, "fleet_http_closed_total", reason="handler_error") == 1
            await asyncio.sleep(0.05)
            assert server.in_flight == 0
            for c in (*clients, failing, cancelled):
                await c.close()

    run_uv(scenario())


def test_timers_answer_408_and_close_or_just_close_when_idle() -> None:
    async def scenario() -> None:
        async with serving() as server:
            head = RawClient(port(server))
            await head.send(b"GET /hello HTTP/1.1\r\nHo")
            body = RawClient(port(server))
            await body.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
            crlf = RawClient(port(server))
            await crlf.send(b"\r\n")  # a stray CRLF starts the head's timer
            idle = RawClient(port(server))
            assert (await idle.request("GET", "/hello")).status == 200
            for c in (head, body, crlf):
                reply = await c.reply(timeout=3)
                assert reply.status == 408 and reply.headers["connection"] == "close"
                assert await c.closed_by_peer(timeout=3)
            assert await idle.closed_by_peer(timeout=3)  # no answer, just closed
            assert sample(server, "fleet_http_timeouts_total", phase="head") == 2
            assert sample(server, "fleet_http_timeouts_total", phase="body") == 1
            assert sample(server, "fleet_http_timeouts_total", phase="idle") == 1
            for c in (head, body, crlf, idle):
                await c.close()

    run_uv(scenario())


def test_refusals_are_answered_before_the_connection_closes() -> None:
    async def scenario() -> None:
        limits = HttpLimits(max_body_bytes=1000, max_header_bytes=2000)
        async with serving(limits) as server:
            big = RawClient(port(server))  # the whole oversized body is on its way: no reset
            chunk = b"%x\r\n%s\r\n" % (4000, b"a" * 4000)
            await big.send(
                b"POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunk * 50
            )
            reply = await big.reply()
            assert reply.status == 413 and reply.json() == {"error": "request body too large"}
            assert await big.closed_by_peer()
            head = RawClient(port(server))
            await head.send(b"GET /hello HTTP/1.1\r\nX: " + b"h" * 3000 + b"\r\n\r\n")
            assert (await head.reply()).status == 431
            smuggle = RawClient(port(server))
            await smuggle.send(
                b"POST /hello HTTP/1.1\r\nX: a\nContent-Length: 30\r\n\r\n" + get("/hidden")
            )
            assert (await smuggle.reply()).status == 400
            assert await smuggle.closed_by_peer()
            assert sample(server, "fleet_http_refused_total", reason="body_too_large") == 1
            assert sample(server, "fleet_http_refused_total", reason="head_too_large") == 1
            assert sample(server, "fleet_http_refused_total", reason="bad_request") == 1
            for c in (big, head, smuggle):
                await c.close()

    run_uv(scenario())


def test_upgrades_are_answered_as_plain_requests_and_closed() -> None:
    async def scenario() -> None:
        async with serving() as server:
            c = RawClient(port(server))
            await c.send(
                get("/hello", "Upgrade: websocket\r\nConnection: Upgrade\r\n") + b"\x81\x05hello"
            )
            reply = await c.reply()
            assert reply.status == 200 and reply.headers["connection"] == "close"
            assert await c.closed_by_peer()
            assert sample(server, "fleet_http_closed_total", reason="upgrade") == 1
            await c.close()

    run_uv(scenario())


def test_requests_per_connection_are_capped() -> None:
    async def scenario() -> None:
        async with serving(HttpLimits(max_requests_per_connection=3)) as server:
            c = RawClient(port(server))
            replies = [await c.request("GET", "/hello") for _ in range(3)]
            assert "connection" not in replies[1].headers
            assert replies[2].headers["connection"] == "close"
            assert await c.closed_by_peer()
            assert sample(server, "fleet_http_closed_total", reason="request_cap") == 1
            await c.close()

    run_uv(scenario())


def test_connections_past_the_cap_are_closed_at_accept_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with serving(HttpLimits(max_connections=3), fd_limit=1000) as server:
            assert server.cap == 3
            kept = [RawClient(port(server)) for _ in range(3)]
            for c in kept:
                assert (await c.request("GET", "/hello")).status == 200
            extra = [RawClient(port(server)) for _ in range(4)]
            for c in extra:
                await c.send(get("/hello"))
                assert await c.closed_by_peer()
            assert (await kept[0].request("GET", "/hello")).status == 200
            assert sample(server, "fleet_http_connections_rejected_total") == 4
            assert sample(server, "fleet_http_connections") == 3
            for c in kept + extra:
                await c.close()

    with caplog.at_level(logging.WARNING, logger="fleet.http"):
        run_uv(scenario())
    cap_lines = [r for r in caplog.records if "connection cap reached" in r.getMessage()]
    assert len(cap_lines) == 1  # rate-limited: one line for four refusals


def test_a_cap_above_the_descriptor_limit_fails_at_start() -> None:
    from fleet.errors import SettingsError

    with pytest.raises(SettingsError, match="RTBFLEET_HTTP_MAX_CONNECTIONS"):
        HttpServer(
            HttpLimits(max_connections=5000),
            metrics=HttpMetrics(CollectorRegistry()),
            fd_limit=1024,
        )
    automatic = HttpServer(HttpLimits(), metrics=HttpMetrics(CollectorRegistry()), fd_limit=1024)
    assert automatic.cap == 1024 - 64


def test_a_client_that_does_not_read_its_answers_is_dropped() -> None:
    async def scenario() -> None:
        async with serving() as server:
            _, writer = await asyncio.open_connection("127.0.0.1", port(server))
            try:
                writer.write(get("/large") * 40)  # 40 MB of answers, never read
                for _ in range(300):
                    if sample(server, "fleet_http_timeouts_total", phase="write"):
                        break
                    await asyncio.sleep(0.02)
                assert sample(server, "fleet_http_timeouts_total", phase="write") == 1
                # the transport is aborted with the count; the loop reports it lost just after
                for _ in range(100):
                    if server.connections == 0:
                        break
                    await asyncio.sleep(0.01)
                assert server.connections == 0 and server.in_flight == 0
            finally:
                writer.close()

    run_uv(scenario())
