"""The framer: bytes in, requests out, with the limits counted as the bytes arrive."""

from __future__ import annotations

import itertools

import pytest

from fleet.http import Framer, HttpLimits, Response, accepts_gzip, response_bytes
from fleet.http.framing import BODY, DONE, HEAD, IDLE


def frame(data: bytes, limits: HttpLimits | None = None, now: float = 1.0) -> Framer:
    framer = Framer(limits or HttpLimits())
    framer.feed(data, now)
    return framer


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode() + b"\r\n\r\n"


def test_a_typical_bid_request() -> None:
    body = b'{"id":"1"}'
    f = frame(
        head(
            "POST /openrtb2/bid?exchange=x HTTP/1.1\nHost: bidder\n"
            "Content-Type: application/json\nContent-Length: 10\nContent-Encoding:  gzip \n"
            "Accept-Encoding: gzip, deflate\nX-OpenRTB-Version: 2.5\nUser-Agent: exchange/1.0"
        )
        + body
    )
    assert f.error is None and f.phase == IDLE
    (r,) = f.requests
    assert (r.method, r.path, r.query, r.version) == (
        "POST",
        "/openrtb2/bid",
        "exchange=x",
        "HTTP/1.1",
    )
    assert r.body == body and r.keep_alive and not r.close and not r.chunked
    assert r.header(b"content-encoding") == "gzip"  # stripped, names lower case
    assert r.header(b"user-agent") == "exchange/1.0"
    assert (b"X-OpenRTB-Version", b"2.5") in r.raw_headers
    assert accepts_gzip(r.headers[b"accept-encoding"])
    assert r.received_at == 1.0


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "Connection: close\n", False),
        ("HTTP/1.1", "Connection: Keep-Alive, Close\n", False),
        ("HTTP/1.0", "", False),
        ("HTTP/1.0", "Connection: keep-alive\n", True),
    ],
)
def test_keep_alive_rules(version: str, connection: str, keep_alive: bool) -> None:
    f = frame(head(f"POST /openrtb2/bid {version}\n{connection}Content-Length: 0"))
    assert f.requests[0].keep_alive is keep_alive
    assert f.phase == (IDLE if keep_alive else DONE)


def test_pipelined_requests_are_queued_in_order_and_nothing_after_a_close_is_read() -> None:
    one = head("POST /a HTTP/1.1\nContent-Length: 3") + b"abc"
    two = (
        head("POST /b HTTP/1.1\nTransfer-Encoding: chunked") + b"3;x=y\r\ndef\r\n0\r\nT: 1\r\n\r\n"
    )
    three = head("GET /c HTTP/1.1\nConnection: close")
    f = frame(one + two + three + head("GET /never HTTP/1.1"))
    assert [(r.path, r.body) for r in f.requests] == [("/a", b"abc"), ("/b", b"def"), ("/c", b"")]
    assert f.requests[1].chunked and b"t" not in f.requests[1].headers  # trailers dropped
    assert f.error is None and f.phase == DONE


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (head("POST /x HTTP/2.0"), 505),
        (head("POST /x HTTP/1.2"), 400),  # llhttp knows no such version
        (head("POST /x HTTP/1.1\nX: a\nContent-Length: 4").replace(b"a\r\n", b"a\n"), 400),
        (head("POST /x HTTP/1.1\nX: a\n b"), 400),  # obs-fold
        (head("POST /x HTTP/1.1\nX : a"), 400),
        (head("POST /x HTTP/1.1\nContent-Length: 5\nContent-Length: 5"), 400),
        (head("POST /x HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked"), 400),
        (head("POST /x HTTP/1.1\nTransfer-Encoding: gzip, chunked"), 501),
        (head("POST /x HTTP/1.1\nTransfer-Encoding: chunked, chunked"), 400),
        (head("POST /x HTTP/1.0\nTransfer-Encoding: chunked"), 400),
        (head("POST /x HTTP/1.1\nContent-Length: +5"), 400),
        (head("GET /x HTTP/1.1\nHost: a\nHost: b"), 400),
        (head("GET /\x00 HTTP/1.1"), 400),
        (head("GET /x HTTP/1.1\nX: a\x00b"), 400),
        (head("GET /x HTTP/1.1\nX\x01: a"), 400),
        (head("GET /x HTTP/1.1\nX: a\x7fb"), 400),
        (head("CONNECT example.com:443 HTTP/1.1\nHost: example.com"), 405),
        (
            head("POST /x HTTP/1.1\nUpgrade: h2c\nConnection: upgrade\nContent-Length: 3") + b"abc",
            400,
        ),
        (b"\r\n\r\n" + head("GET /x HTTP/1.1"), 400),  # more than one stray CRLF
        (b"\n" + head("GET /x HTTP/1.1"), 400),  # a stray bare LF
    ],
)
def test_ambiguous_or_broken_requests_are_refused(raw: bytes, status: int) -> None:
    f = frame(raw)
    assert not f.requests
    assert f.error is not None and f.error.status == status, f.error
    assert f.phase == DONE
    f.feed(head("GET /after HTTP/1.1"), 2.0)  # nothing after a refusal is framed
    assert not f.requests


@pytest.mark.parametrize("size", [b"0x10", b"1_0", b"+5", b" 5", b"-0", b"5 ", b"-10", b"g"])
def test_lax_chunk_sizes_are_refused(size: bytes) -> None:
    f = frame(head("POST /x HTTP/1.1\nTransfer-Encoding: chunked") + size + b"\r\nabcde\r\n")
    assert f.error is not None and f.error.status == 400 and not f.requests


def test_a_bare_lf_in_trailers_does_not_swallow_the_next_request() -> None:
    smuggle = b"5\r\nabcde\r\n0\r\nX: y\n" + head("GET /hidden HTTP/1.1")
    f = frame(head("POST /x HTTP/1.1\nTransfer-Encoding: chunked") + smuggle)
    assert f.error is not None and not f.requests


def test_one_stray_crlf_between_requests_is_allowed() -> None:
    f = frame(b"\r\n" + head("GET /a HTTP/1.1") + b"\r\n" + head("GET /b HTTP/1.1"))
    assert [r.path for r in f.requests] == ["/a", "/b"] and f.error is None
    f = frame(head("GET /a HTTP/1.1") + b"\r\n\r\n")
    assert f.error is not None and [r.path for r in f.requests] == ["/a"]
    f = Framer(HttpLimits())  # the same, a read at a time
    f.feed(head("GET /a HTTP/1.1"), 1.0)
    f.feed(b"\r\n", 2.0)
    assert f.phase == HEAD and f.since == 2.0  # the head timer runs from a stray CRLF
    f.feed(b"\r\n", 3.0)
    assert f.error is not None and f.error.status == 400


def test_an_upgrade_is_not_taken() -> None:
    f = frame(head("GET /x HTTP/1.1\nUpgrade: websocket\nConnection: upgrade") + b"\x81\x05hello")
    (r,) = f.requests
    assert r.close and not r.keep_alive and f.upgrade_refused and f.phase == DONE
    assert f.error is None


def test_limits_on_the_head_the_declared_and_the_decoded_body_and_the_chunks() -> None:
    limits = HttpLimits(max_header_bytes=1024, max_body_bytes=100, max_chunks=4)
    f = frame(head("GET /x HTTP/1.1\nX: " + "a" * 2000), limits)
    assert f.error is not None and f.error.status == 431
    f = Framer(limits)  # a head that never ends, a byte at a time, counted on the wire
    f.feed(b"GET /x HTTP/1.1\r\nX: ", 1.0)
    for i in range(1100):
        f.feed(b" ", 1.0 + i)
        if f.error:
            break
    assert f.error is not None and f.error.status == 431
    f = frame(head("POST /x HTTP/1.1\nContent-Length: 101"), limits)  # refused before the body
    assert f.error is not None and f.error.status == 413 and f.error.metric == "body_too_large"
    chunked = head("POST /x HTTP/1.1\nTransfer-Encoding: chunked")
    f = frame(chunked + b"64\r\n" + b"a" * 100 + b"\r\n1\r\nb\r\n", limits)
    assert f.error is not None and f.error.status == 413
    f = frame(chunked + b"1\r\na\r\n" * 5, limits)
    assert f.error is not None and f.error.metric == "too_many_chunks"
    ok = frame(chunked + b"1\r\na\r\n" * 3 + b"0\r\n\r\n", limits)
    assert ok.error is None and ok.requests[0].body == b"aaa"


def test_chunk_extensions_and_trailers_count_on_the_wire() -> None:
    limits = HttpLimits(max_header_bytes=1024, max_body_bytes=100, max_chunks=4)
    extension = b";" + b"x" * (limits.max_message_bytes + 10)
    f = Framer(limits)
    f.feed(head("POST /x HTTP/1.1\nTransfer-Encoding: chunked") + b"1", 1.0)
    for i in range(0, len(extension), 1000):
        f.feed(extension[i : i + 1000], 2.0)
    assert f.error is not None and f.error.status == 413 and not f.requests
    f = Framer(limits)
    f.feed(head("POST /x HTTP/1.1\nTransfer-Encoding: chunked") + b"0\r\n", 1.0)
    for _ in range(limits.max_message_bytes // 20 + 2):
        f.feed(b"X-Trailer: " + b"t" * 7 + b"\r\n", 2.0)
    assert f.error is not None and f.error.status == 413


def test_phases_and_their_times() -> None:
    f = Framer(HttpLimits())
    assert f.phase == IDLE
    f.feed(b"POST /x HTTP/1.1\r\nContent-", 5.0)
    assert (f.phase, f.since) == (HEAD, 5.0)
    f.feed(b"Length: 3\r\nExpect: 100-continue\r\n\r\n", 6.0)
    assert (f.phase, f.since) == (BODY, 6.0) and f.continue_due
    f.feed(b"ab", 7.0)
    assert f.phase == BODY and f.since == 6.0
    f.feed(b"c", 8.0)
    assert f.phase == IDLE and f.requests[0].received_at == 5.0 and not f.continue_due


def test_responses() -> None:
    assert response_bytes(204, headers=b"x-openrtb-version: 2.6\r\n") == (
        b"HTTP/1.1 204 No Content\r\nx-openrtb-version: 2.6\r\n\r\n"
    )
    ok = response_bytes(200, b'{"id":"1"}', close=True)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b'\r\n\r\n{"id":"1"}')
    assert b"Content-Type: application/json\r\n" in ok
    assert b"Content-Length: 10\r\n" in ok and b"Connection: close\r\n" in ok
    redirect = Response(302, headers=(("Location", "https://example.com/x"),)).to_bytes(close=False)
    assert redirect == (
        b"HTTP/1.1 302 Found\r\nLocation: https://example.com/x\r\nContent-Length: 0\r\n\r\n"
    )
    head_only = Response(200, b"12345", content_type=b"text/plain")
    assert head_only.to_bytes(close=False, head=True).endswith(b"Content-Length: 5\r\n\r\n")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"gzip", True),
        (b"deflate, gzip;q=0.5", True),
        (b"gzip;q=0", False),
        (b"gzip;q=0.0", False),
        (b"identity", False),
        (b"*", True),
        (b"br", False),
        (None, False),
    ],
)
def test_accept_encoding(value: bytes | None, ok: bool) -> None:
    assert accepts_gzip(value) is ok


def test_a_plain_response_is_formatted_as_response_bytes_formats_it() -> None:
    """Response.to_bytes formats a 2xx without extra headers in one step: the same bytes."""
    for status, body, content_type, own_close, close, keep_alive_10, head in itertools.product(
        (200, 201, 204, 250, 299, 302, 404),
        (b"", b"{}", b'{"id":"1"}'),
        (b"application/json", b"image/gif"),
        (False, True),
        (False, True),
        (False, True),
        (False, True),
    ):
        response = Response(status, body, content_type=content_type, close=own_close)
        expected = response_bytes(
            status,
            body,
            content_type=content_type,
            close=close or own_close,
            keep_alive_10=keep_alive_10,
            omit_body=head,
        )
        got = response.to_bytes(close=close, keep_alive_10=keep_alive_10, head=head)
        assert got == expected, (status, body, own_close, close, keep_alive_10, head)


def test_headers_are_built_from_the_raw_headers_on_first_use() -> None:
    f = frame(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A:  one \r\nx-a: two\r\nAccept: */*\r\n\r\n")
    r = f.requests[0]
    assert r.raw_headers == [
        (b"Host", b"x"),
        (b"X-A", b"one "),
        (b"x-a", b"two"),
        (b"Accept", b"*/*"),
    ]
    assert r.headers == {b"host": b"x", b"x-a": b"one, two", b"accept": b"*/*"}
    assert r.headers is r.headers and r.header(b"x-a") == "one, two"
