"""The bidder's HTTP surface against a real server on a loopback port (uvloop, real pipeline,
the catch-all portfolio from a file, no Postgres)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import time
from pathlib import Path

from conftest_bidder import (
    RawClient,
    banner_request,
    make_settings,
    metric,
    run_uv,
    running_service,
    write_catch_all,
)


def settings_for(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return make_settings(RTBFLEET_BIDDER_PORTFOLIO_FILE=str(write_catch_all(tmp_path)), **env)


def test_bid_no_bid_and_errors_over_one_keep_alive_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            c = RawClient(service.port)
            ready = await c.request("GET", "/readyz")
            assert ready.status == 200 and ready.json()["ready"] is True
            assert (await c.request("GET", "/healthz")).status == 200

            bid = await c.bid(banner_request("r1"), {"x-openrtb-version": "2.5"})
            assert bid.status == 200, bid
            assert bid.headers["x-openrtb-version"] == "2.5"
            assert bid.headers["content-type"] == "application/json"
            doc = bid.json()
            assert doc["id"] == "r1" and doc["seatbid"][0]["bid"][0]["impid"] == "1"

            blocked = banner_request("r2", badv=["catchall.example"])
            nobid = await c.bid(blocked)
            assert nobid.status == 204 and nobid.body == b""
            assert nobid.headers["x-openrtb-version"] == "2.6"

            bad = await c.request("POST", "/openrtb2/bid", b'{"id": "x", "imp": [')
            assert bad.status == 400 and "error" in json.loads(bad.body)
            assert (await c.request("POST", "/openrtb2/bid", b"[]")).status == 400

            assert (await c.request("GET", "/openrtb2/bid")).status == 405
            assert (await c.request("DELETE", "/openrtb2/bid")).status == 405
            assert (await c.request("GET", "/nope")).status == 404
            assert (await c.request("POST", "/metrics", b"x")).status == 405

            again = await c.bid(banner_request("r3"))  # the same connection still works
            assert again.status == 200
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_requests_total", outcome="bid", reason="bid") == 2
            assert metric(text, "bidder_requests_total", outcome="invalid", reason="invalid") == 2
            assert metric(text, "bidder_request_duration_seconds_count") >= 5
            assert metric(text, "bidder_bids_total", campaign="1") == 2
            assert "bidder_event_loop_lag_seconds" in text
            await c.close()

    run_uv(scenario())


def test_gzip_both_ways_and_body_limits(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(tmp_path, RTBFLEET_HTTP_MAX_BODY_BYTES="20000")
        async with running_service(settings) as service:
            c = RawClient(service.port)
            packed = gzip.compress(json.dumps(banner_request("g1")).encode())
            reply = await c.request(
                "POST",
                "/openrtb2/bid",
                packed,
                {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
            )
            assert reply.status == 200 and reply.headers["content-encoding"] == "gzip"
            assert reply.json()["id"] == "g1"

            bad = await c.request(
                "POST", "/openrtb2/bid", b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}
            )
            assert bad.status == 400 and json.loads(bad.body)["error"]

            bomb = gzip.compress(b" " * 1_000_000)  # small on the wire, too large unpacked
            reply = await c.request("POST", "/openrtb2/bid", bomb, {"Content-Encoding": "gzip"})
            assert reply.status == 413

            assert (await c.bid(banner_request("after"))).status == 200

            # Larger than the limit as declared: 413 at once (the body is never read) and the
            # connection closes; the other connections go on.
            big = RawClient(service.port)
            await big.send(b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n")
            assert (await big.reply()).status == 413
            assert await big.closed_by_peer()
            huge = RawClient(service.port)  # ... or as it arrives, chunk by chunk
            await huge.send(b"POST /openrtb2/bid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(4):
                await huge.send(b"2000\r\n" + b"a" * 0x2000 + b"\r\n")
            reply = await huge.reply()
            assert reply.status == 413 and json.loads(reply.body)["error"]
            assert await huge.closed_by_peer()
            assert (await c.bid(banner_request("still"))).status == 200
            await big.close()
            await c.close()
            await huge.close()

    run_uv(scenario())


def test_chunked_pipelined_and_expect_continue(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            c = RawClient(service.port)
            body = json.dumps(banner_request("c1")).encode()
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            await c.send(
                b"POST /openrtb2/bid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
            )
            assert (await c.reply()).json()["id"] == "c1"

            one = json.dumps(banner_request("p1")).encode()
            two = json.dumps(banner_request("p2", badv=["catchall.example"])).encode()
            head = b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
            await c.send(head % len(one) + one + head % len(two) + two)  # one write, two requests
            first, second = await c.reply(), await c.reply()
            assert first.status == 200 and first.json()["id"] == "p1"
            assert second.status == 204

            await c.send(
                b"POST /openrtb2/bid HTTP/1.1\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(one)
            )
            assert (await c.reply()).status == 100
            await c.send(one)
            assert (await c.reply()).status == 200

            old = RawClient(service.port)  # HTTP/1.0 asking for keep-alive gets it, said aloud
            await old.send(
                b"POST /openrtb2/bid HTTP/1.0\r\nConnection: keep-alive\r\n"
                b"Content-Length: %d\r\n\r\n" % len(one) + one
            )
            kept = await old.reply()
            assert kept.status == 200 and kept.headers["connection"] == "keep-alive"
            await old.close()

            closing = RawClient(service.port)
            await closing.send(head % len(one) + one)  # HTTP/1.1 keep-alive by default
            assert (await closing.reply()).status == 200
            await closing.send(b"POST /openrtb2/bid HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
            assert (await closing.reply()).status == 400
            assert await closing.closed_by_peer()  # HTTP/1.0 without keep-alive
            await c.close()
            await closing.close()

    run_uv(scenario())


def test_malformed_http_is_a_400_and_a_closed_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            for raw in (
                b"NONSENSE\r\n\r\n",
                b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n{}",
                b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires a Host header
            ):
                c = RawClient(service.port)
                await c.send(raw)
                reply = await c.reply()
                assert reply.status == 400 and json.loads(reply.body)["error"]
                assert await c.closed_by_peer()
                await c.close()
            healthy = RawClient(service.port)
            assert (await healthy.request("GET", "/healthz")).status == 200
            await healthy.close()

    run_uv(scenario())


def test_shedding_answers_no_bid_before_parsing(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(
            tmp_path, RTBFLEET_BIDDER_SHED="1", RTBFLEET_BIDDER_SHED_WAIT_MS="4"
        )
        async with running_service(settings) as service:

            async def overload() -> None:  # keeps the loop 20 ms late, as a flood would
                while True:
                    time.sleep(0.02)  # noqa: ASYNC251 - the point of the test
                    await asyncio.sleep(0.001)

            burden = asyncio.create_task(overload())
            await asyncio.sleep(0.2)
            c = RawClient(service.port)
            replies = [await c.bid(banner_request(f"s{i}")) for i in range(20)]
            burden.cancel()
            assert [r.status for r in replies] == [204] * 20
            assert all(r.headers["x-openrtb-version"] == "2.6" for r in replies)
            await asyncio.sleep(0.3)  # the loop keeps up again: shedding stops
            assert (await c.bid(banner_request("calm"))).status == 200
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_shed_total", reason="lag") == 20
            assert metric(text, "bidder_requests_total", outcome="shed", reason="lag") == 20
            assert metric(text, "bidder_requests_total", outcome="bid", reason="bid") == 1
            await c.close()

    run_uv(scenario())


def test_too_many_requests_in_flight_are_shed(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(
            tmp_path, RTBFLEET_BIDDER_SHED="1", RTBFLEET_BIDDER_SHED_MAX_IN_FLIGHT="1"
        )
        async with running_service(settings) as service:
            c = RawClient(service.port)
            assert (await c.bid(banner_request())).status == 204
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_shed_total", reason="in_flight") == 1
            await c.close()

    run_uv(scenario())


def test_never_an_answer_after_tmax(tmp_path: Path) -> None:
    """The loop is stuck for 120 ms while a request with tmax 50 ms waits in the socket: the
    bidder sees the lag, knows the request is stale, and closes the connection unanswered."""

    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            warm = RawClient(service.port)
            assert (await warm.bid(banner_request("warm"))).status == 200
            body = json.dumps(banner_request("stale", tmax=50)).encode()
            wire = b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            result: dict[str, object] = {}
            sent = threading.Event()

            def client() -> None:
                import socket

                with socket.create_connection(("127.0.0.1", service.port), timeout=5) as s:
                    s.sendall(wire)
                    sent.set()
                    result["data"] = s.recv(65536)

            thread = threading.Thread(target=client)
            # From here the loop is blocked (this coroutine does not yield): the request sits
            # in the socket while the bidder cannot look, as in an overload burst.
            thread.start()
            assert sent.wait(5)
            time.sleep(0.12)  # noqa: ASYNC251 - the stall under test
            await asyncio.to_thread(thread.join, 5)
            assert result["data"] == b"", result  # closed, no status line at all
            fresh = RawClient(service.port)
            assert (await fresh.bid(banner_request("fresh", tmax=200))).status == 200
            text = (await fresh.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_errors_total", where="late_dropped") == 1
            await warm.close()
            await fresh.close()

    run_uv(scenario())


def test_not_ready_without_a_config_source(tmp_path: Path) -> None:
    async def scenario() -> None:
        from fleet.pg import free_port

        dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
        async with running_service(make_settings(RTBFLEET_PG_DSN=dead), wait_ready=False) as s:
            c = RawClient(s.port)
            ready = await c.request("GET", "/readyz")
            assert ready.status == 503
            assert ready.json() == {"ready": False, "config": False, "model": True, "spend": False}
            reply = await c.bid(banner_request())
            assert reply.status == 204
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_requests_total", outcome="nobid", reason="not_ready") == 1
            assert metric(text, "bidder_ready") == 0
            await c.close()

    run_uv(scenario())


def test_idle_and_dribbling_connections_are_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(
            tmp_path,
            RTBFLEET_HTTP_IDLE_TIMEOUT="0.6",
            RTBFLEET_HTTP_BODY_TIMEOUT="0.4",
            RTBFLEET_HTTP_HEADER_TIMEOUT="0.4",
        )
        async with running_service(settings) as service:
            idle = RawClient(service.port)
            assert (await idle.bid(banner_request())).status == 200
            dribble = RawClient(service.port)
            await dribble.send(b"POST /openrtb2/bid HTTP/1.1\r\nContent-Le")  # and then nothing
            started = time.monotonic()
            assert (await dribble.reply()).status == 408  # the head's timer ran out
            assert await dribble.closed_by_peer(timeout=5)
            assert time.monotonic() - started < 2.5
            assert await idle.closed_by_peer(timeout=5)
            await idle.close()
            await dribble.close()

    run_uv(scenario())


def test_shutdown_finishes_the_request_under_way_and_closes_idle_connections(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            idle = RawClient(service.port)
            assert (await idle.bid(banner_request("i"))).status == 200
            busy = RawClient(service.port)
            body = json.dumps(banner_request("b")).encode()
            await busy.send(
                b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            await busy.send(body[:10])  # the request is under way
            await asyncio.sleep(0.05)
            stopping = asyncio.create_task(service.stop())
            assert await idle.closed_by_peer()  # idle keep-alive connections go at once
            await busy.send(body[10:])
            reply = await busy.reply()
            assert reply.status == 200 and reply.headers["connection"] == "close"
            assert await busy.closed_by_peer()
            await asyncio.wait_for(stopping, 5)
            try:  # nothing listens any more
                await asyncio.open_connection("127.0.0.1", service.port)
                raise AssertionError("still accepting connections")
            except OSError:
                pass
            await idle.close()
            await busy.close()

    run_uv(scenario())


def test_pipelined_requests_of_both_kinds_are_answered_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            c = RawClient(service.port)
            one = json.dumps(banner_request("q1")).encode()
            bid = b"POST /openrtb2/bid HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(one) + one
            health = b"GET /healthz HTTP/1.1\r\nHost: bidder\r\n\r\n"
            await c.send(bid + health + bid + health * 2 + bid)  # one write, six requests
            statuses = [(await c.reply()).status for _ in range(6)]
            assert statuses == [200] * 6
            assert (await c.bid(banner_request("after"))).json()["id"] == "after"
            await c.close()

    run_uv(scenario())


def test_a_connection_in_use_is_not_idle(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = settings_for(tmp_path, RTBFLEET_HTTP_IDLE_TIMEOUT="0.6")
        async with running_service(settings) as service:
            c = RawClient(service.port)
            started = time.monotonic()
            while time.monotonic() - started < 1.5:  # busy well past the idle timeout
                assert (await c.bid(banner_request())).status == 200
                await asyncio.sleep(0.1)
            assert await c.closed_by_peer(timeout=5)  # and closed once it idles
            await c.close()

    run_uv(scenario())


def test_a_changed_portfolio_file_is_applied_incrementally(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = write_catch_all(tmp_path)
        doc = json.loads(path.read_text())
        async with running_service(settings_for(tmp_path)) as service:
            c = RawClient(service.port)
            assert (await c.bid(banner_request("a1"))).status == 200
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_config_apply_seconds", kind="full") > 0
            # pause the only campaign: the file is reread and applied without a full build
            doc["campaigns"][0]["status"] = "paused"
            path.write_text(json.dumps(doc))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if (await c.bid(banner_request("a2"))).status == 204:
                    break
            else:
                raise AssertionError("the changed portfolio file was not applied")
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_config_apply_seconds", kind="incremental") > 0
            path.write_text("{not json")  # a broken file: logged, the old portfolio stays
            await asyncio.sleep(1.5)
            assert (await c.bid(banner_request("a3"))).status == 204
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_config_loads_total", result="error") >= 1
            # read while being written: the rest lands within the same clock tick (the same
            # modification time), and the file is read again for its new size
            doc["campaigns"][0]["status"] = "active"
            whole = json.dumps(doc)
            path.write_text(whole[: len(whole) // 2])
            stamp = path.stat().st_mtime_ns
            await asyncio.sleep(1.5)
            assert (await c.bid(banner_request("a4"))).status == 204
            path.write_text(whole)
            os.utime(path, ns=(stamp, stamp))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if (await c.bid(banner_request("a5"))).status == 200:
                    break
            else:
                raise AssertionError("the completed portfolio file was not read again")
            await c.close()

    run_uv(scenario())


def test_deep_json_is_a_400_and_a_blank_flag_is_absent(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A body nested 100,000 deep is malformed JSON (400 with the reason), not an internal
    error with a traceback; ``"secure": ""`` reads as absent (a bid), not a 400."""

    async def scenario() -> None:
        async with running_service(settings_for(tmp_path)) as service:
            c = RawClient(service.port)
            deep = b'{"id": "d", "imp": [{"id": "1"}], "ext": ' + b"[" * 100_000
            deep += b"]" * 100_000 + b"}"
            reply = await c.request("POST", "/openrtb2/bid", deep)
            assert reply.status == 400, reply
            assert json.loads(reply.body) == {"error": "malformed JSON: nested too deeply"}
            req = banner_request("s1")
            req["imp"][0]["secure"] = ""
            assert (await c.bid(req)).status == 200
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_requests_total", outcome="invalid", reason="invalid") == 1
            assert metric(text, "bidder_requests_total", outcome="nobid", reason="internal") == 0
            await c.close()

    run_uv(scenario())
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
