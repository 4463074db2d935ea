from __future__ import annotations

import gzip

import pytest

from sim.errors import HttpProtocolError
from sim.http1 import ResponseParser, build_request


def test_build_request() -> None:
    data = build_request("POST", "/openrtb2/bid", "127.0.0.1:8080", (("X-A", "1"),), b"{}")
    assert data == (
        b"POST /openrtb2/bid HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n"
        b"X-A: 1\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert b"Content-Length" not in build_request("GET", "/x", "h")


def test_content_length_split_anywhere() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello" + (
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    for cut in range(len(raw)):
        p = ResponseParser()
        got = p.feed(raw[:cut]) + p.feed(raw[cut:])
        assert [(r.status, r.body) for r in got] == [(200, b"hello"), (204, b"")]
        assert got[0].headers["x-y"] == "z" and got[0].keep_alive
        assert p.idle


def test_chunked_with_trailers_and_interim_response() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    for cut in range(0, len(raw), 3):
        p = ResponseParser()
        got = p.feed(raw[:cut]) + p.feed(raw[cut:])
        assert [r.body for r in got] == [b"Wikipedia ", b"abc"]


def test_close_delimited_body_and_connection_close() -> None:
    p = ResponseParser()
    assert p.feed(b"HTTP/1.0 200 OK\r\n\r\npartial") == []
    r = p.feed_eof()
    assert r is not None and r.body == b"partial" and not r.keep_alive
    p = ResponseParser()
    (r,) = p.feed(
        b"HTTP/1.1 302 Found\r\nLocation: /x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    assert r.status == 302 and r.headers["location"] == "/x" and not r.keep_alive


def test_gzip_body() -> None:
    body = gzip.compress(b'{"id":"1"}')
    p = ResponseParser()
    (r,) = p.feed(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    assert r.decoded_body() == b'{"id":"1"}'
    r.body = b"not gzip"
    with pytest.raises(HttpProtocolError):
        r.decoded_body()


@pytest.mark.parametrize(
    "raw",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_protocol_errors(raw: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        ResponseParser().feed(raw)


def test_truncated_response_is_an_error_at_eof() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(HttpProtocolError):
        p.feed_eof()


@pytest.mark.parametrize("size", [b"-10", b"0x10", b"+5", b" 5", b"1_0", b"-0"])
def test_lax_chunk_sizes_are_errors_not_loops(size: bytes) -> None:
    p = ResponseParser()
    with pytest.raises(HttpProtocolError):
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabcde\r\n")


def test_buffering_is_bounded() -> None:
    from sim.http1 import MAX_BODY_BYTES, MAX_HEADER_BYTES

    endless_head = ResponseParser()
    endless_head.feed(b"HTTP/1.1 200 OK\r\nX-Long: ")
    with pytest.raises(HttpProtocolError):
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            endless_head.feed(b"a" * 1000)
    endless_body = ResponseParser()
    endless_body.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"b" * 65536)
    with pytest.raises(HttpProtocolError):
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            endless_body.feed(chunk)
