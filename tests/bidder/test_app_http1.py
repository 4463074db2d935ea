"""The bid path's HTTP/1.1 framing: what is accepted, what is refused, and how answers look."""

from __future__ import annotations

import pytest

from bidder.http1 import (
    ChunkedDecoder,
    HttpError,
    accepts_gzip,
    openrtb_version,
    parse_head,
    response_bytes,
)


def head(lines: str) -> bytes:
    return lines.replace("\n", "\r\n").encode()


def test_a_typical_bid_request_head() -> None:
    h = parse_head(
        head(
            "POST /openrtb2/bid?exchange=x HTTP/1.1\n"
            "Host: bidder\nContent-Type: application/json\nContent-Length: 512\n"
            "Content-Encoding: gzip\nAccept-Encoding: gzip, deflate\n"
            "X-OpenRTB-Version: 2.5\nUser-Agent: exchange/1.0\nX-Other: ignored"
        )
    )
    assert (h.method, h.path, h.version) == ("POST", "/openrtb2/bid", "HTTP/1.1")
    assert h.target == "/openrtb2/bid?exchange=x"
    assert h.content_length == 512 and not h.chunked and h.keep_alive
    assert h.header(b"content-encoding") == "gzip"
    assert h.header(b"user-agent") == "exchange/1.0"
    assert b"x-other" not in h.headers
    assert openrtb_version(h) == "2.5"
    assert accepts_gzip(h)


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
    h = parse_head(head(f"POST /openrtb2/bid {version}\n{connection}Content-Length: 0"))
    assert h.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("GARBAGE", 400),
        ("POST /x HTTP/2.0", 400),
        ("POST  /x HTTP/1.1", 400),
        ("PO(ST /x HTTP/1.1", 400),
        ("POST /x HTTP/1.1\nContent-Length: 5\nContent-Length: 6", 400),
        ("POST /x HTTP/1.1\nContent-Length: -1", 400),
        ("POST /x HTTP/1.1\nContent-Length: 1e3", 400),
        ("POST /x HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked", 400),
        ("POST /x HTTP/1.1\nTransfer-Encoding: gzip, chunked", 400),
        ("POST /x HTTP/1.0\nTransfer-Encoding: chunked", 400),
        ("POST /x HTTP/1.1\nContent-Length : 5", 400),
        ("POST /x HTTP/1.1\nX-A: b\n folded", 400),
        ("POST /x HTTP/1.1\nno colon here", 400),
    ],
)
def test_ambiguous_or_broken_heads_are_refused_and_close(raw: str, status: int) -> None:
    with pytest.raises(HttpError) as err:
        parse_head(head(raw))
    assert err.value.status == status
    assert err.value.close


def test_the_same_content_length_twice_is_fine() -> None:
    assert (
        parse_head(head("POST /x HTTP/1.1\nContent-Length: 7\nContent-Length: 7")).content_length
        == 7
    )


def test_chunked_body_fed_in_pieces() -> None:
    wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    decoder = ChunkedDecoder(limit=100)
    buf = bytearray()
    done = False
    for i in range(len(wire)):
        buf += wire[i : i + 1]
        done = decoder.feed(buf)
        if done:
            break
    assert done
    assert bytes(decoder.body) == b"hello world"
    assert not decoder.too_large
    assert bytes(buf) == b""  # the trailer's end was the last byte fed
    rest = bytearray(wire)
    assert ChunkedDecoder(100).feed(rest)
    assert bytes(rest) == b"NEXT"  # the next request is left alone


def test_chunked_body_past_the_limit_is_drained_not_kept() -> None:
    decoder = ChunkedDecoder(limit=4)
    buf = bytearray(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
    assert decoder.feed(buf)
    assert decoder.too_large and decoder.size == 6 and not decoder.body


@pytest.mark.parametrize("wire", [b"zz\r\nabc\r\n", b"3\r\nabcXY", b"-3\r\nabc\r\n"])
def test_malformed_chunks(wire: bytes) -> None:
    with pytest.raises(HttpError):
        ChunkedDecoder(100).feed(bytearray(wire))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0", False),
        ("identity", False),
        ("*", True),
        ("br", False),
    ],
)
def test_accept_encoding(value: str, ok: bool) -> None:
    assert accepts_gzip(parse_head(head(f"POST /x HTTP/1.1\nAccept-Encoding: {value}"))) is ok


@pytest.mark.parametrize(
    ("value", "echoed"), [("2.5", "2.5"), (" 2.6 ", "2.6"), ("<script>", "2.6"), ("", "2.6")]
)
def test_openrtb_version_echo_is_sanitised(value: str, echoed: str) -> None:
    raw = f"POST /x HTTP/1.1\nx-openrtb-version: {value}" if value else "POST /x HTTP/1.1"
    assert openrtb_version(parse_head(head(raw))) == echoed


def test_responses() -> None:
    assert response_bytes(204, headers=b"x-openrtb-version: 2.6\r\n") == (
        b"HTTP/1.1 204 No Content\r\nx-openrtb-version: 2.6\r\n\r\n"
    )
    ok = response_bytes(200, b'{"id":"1"}', close=True)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/json\r\n" in ok
    assert b"Content-Length: 10\r\n" in ok and b"Connection: close\r\n" in ok
    assert ok.endswith(b'\r\n\r\n{"id":"1"}')
    assert b"Connection: keep-alive" in response_bytes(400, b"{}", keep_alive_10=True)
