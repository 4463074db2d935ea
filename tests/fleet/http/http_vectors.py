"""Known request-smuggling and framing vectors, and a seeded mutator, for the differential test.

``known_vectors()`` combines a handful of well-formed requests with the classic ambiguities:
bare LF and bare CR, obs-fold, Content-Length with Transfer-Encoding, duplicate or odd
Content-Length, transfer codings other than chunked, lax chunk sizes (0x10, 1_0, +5, " 5",
-0 ...), chunk data without its CRLF, trailers with bare LF, control bytes, NUL and non-ASCII in
names, values and targets, odd versions and methods, stray CRLFs. Each is followed by a second,
well-formed request, so that a vector that hides a request shows up as a different framing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

HOST = b"Host: bidder\r\n"
FOLLOW = b"GET /follow HTTP/1.1\r\nHost: bidder\r\n\r\n"
BODY = b'{"id":"1"}'


def _cl(body: bytes = BODY, headers: bytes = b"") -> bytes:
    return (
        b"POST /openrtb2/bid HTTP/1.1\r\n"
        + HOST
        + headers
        + (b"Content-Length: %d\r\n\r\n" % len(body))
        + body
    )


def _chunked(chunks: bytes, headers: bytes = b"") -> bytes:
    return (
        b"POST /openrtb2/bid HTTP/1.1\r\n"
        + HOST
        + headers
        + (b"Transfer-Encoding: chunked\r\n\r\n")
        + chunks
    )


GOOD = [
    b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n",
    _cl(),
    _chunked(b"a\r\n" + BODY + b"\r\n0\r\n\r\n"),
    b"GET /win?price=1.5&id=x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]

_BAD_BYTES = [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1f", b"\x7f", b"\x80", b"\xff",
              b"\r", b"\n", b" ", b"\t"]  # fmt: skip
_CL_VALUES = [b"10", b"+10", b"-10", b" 10", b"10 ", b"0x0a", b"1_0", b"010", b"10,10", b"10, 11",
              b"1e1", b"", b"99999999999999999999999", b"10\x00", b"\t10"]  # fmt: skip
_TE_VALUES = [b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"chunked,",
              b"gzip, chunked", b"chunked, gzip", b"chunked, chunked", b"identity", b"xchunked",
              b"chunked;q=1", b"\x0bchunked", b"chunk", b"", b"gzip"]  # fmt: skip
_SIZES = [b"a", b"A", b"0a", b"00000a", b"0x0a", b"1_0", b"+a", b" a", b"a ", b"a\t", b"-a",
          b"a;ext", b"a;ext=1", b'a;ext="q"', b"a ;ext", b"a\x00", b"fffffffffffffffffff",
          b"g", b""]  # fmt: skip
_LAST = [b"0", b"-0", b"00", b"0x0", b"+0", b" 0", b"0 ", b"0;ext", b"0\x00"]
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1",
             b"HTTP/1.1 ", b"HTTP/11", b"HTTP/1.1x", b"HTTP/ 1.1"]  # fmt: skip
_METHODS = [b"GET", b"get", b"POST", b"G ET", b"PRI", b"CONNECT", b"TRACE", b"X-CUSTOM", b""]
_TARGETS = [b"/", b"/a?b=c", b"*", b"http://bidder/x", b"//x", b"/a b", b"/a\tb", b"/\x00",
            b"/\x7f", b"/\x80", b"/%00", b"/a#frag", b""]  # fmt: skip


def known_vectors() -> Iterator[bytes]:
    """A few hundred inputs, each of them one vector followed by a well-formed request."""
    for good in GOOD:
        yield good + FOLLOW
        yield b"\r\n" + good + FOLLOW
        yield b"\r\n\r\n" + good + FOLLOW
        yield b"\n" + good + FOLLOW
        yield good + b"\r\n" + FOLLOW
        yield good + b"\r\n\r\n" + FOLLOW
        yield good.replace(b"\r\n", b"\n") + FOLLOW  # bare LF everywhere
        yield good.replace(b"\r\n", b"\r") + FOLLOW  # bare CR everywhere
        lines = good.split(b"\r\n")
        for i in range(len(lines) - 1):  # bare LF / bare CR at each line end in turn
            for sep in (b"\n", b"\r", b"\r\r\n", b"\n\r"):
                yield b"\r\n".join(lines[: i + 1]) + sep + b"\r\n".join(lines[i + 1 :]) + FOLLOW
    # the classic: a header hidden behind a bare LF
    yield b"POST /openrtb2/bid HTTP/1.1\r\nX: a\nContent-Length: 40\r\n\r\n" + FOLLOW
    yield b"POST /openrtb2/bid HTTP/1.1\r\nX: a\rContent-Length: 40\r\n\r\n" + FOLLOW
    for value in _CL_VALUES:
        yield (b"POST /openrtb2/bid HTTP/1.1\r\n" + HOST + b"Content-Length: " + value
               + b"\r\n\r\n" + BODY + FOLLOW)  # fmt: skip
        yield _cl(headers=b"Content-Length: " + value + b"\r\n") + FOLLOW  # duplicate
        yield _chunked(b"a\r\n" + BODY + b"\r\n0\r\n\r\n",
                       b"Content-Length: " + value + b"\r\n") + FOLLOW  # fmt: skip
    for te in _TE_VALUES:
        chunks = b"a\r\n" + BODY + b"\r\n0\r\n\r\n"
        yield (b"POST /openrtb2/bid HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: " + te
               + b"\r\n\r\n" + chunks + FOLLOW)  # fmt: skip
        yield (b"POST /openrtb2/bid HTTP/1.0\r\nTransfer-Encoding: " + te
               + b"\r\nConnection: keep-alive\r\n\r\n" + chunks + FOLLOW)  # fmt: skip
        yield _chunked(chunks, b"Transfer-Encoding: " + te + b"\r\n") + FOLLOW  # two TE lines
        yield (b"POST /openrtb2/bid HTTP/1.1\r\n" + HOST + b"Transfer-Encoding:" + te
               + b"\r\nContent-Length: 3\r\n\r\n" + chunks + FOLLOW)  # fmt: skip
    for size in _SIZES:
        yield _chunked(size + b"\r\n" + BODY + b"\r\n0\r\n\r\n") + FOLLOW
        yield _chunked(size + b"\n" + BODY + b"\r\n0\r\n\r\n") + FOLLOW
    for last in _LAST:
        yield _chunked(b"a\r\n" + BODY + b"\r\n" + last + b"\r\n\r\n") + FOLLOW
    for tail in (b"", b"\n", b"\r", b"xx", b"\r\r\n"):  # chunk data without its CRLF
        yield _chunked(b"a\r\n" + BODY + tail + b"0\r\n\r\n") + FOLLOW
    for trailer in (b"X: y\r\n", b"X: y\n", b"X: y\r", b"X:y\r\n", b" X: y\r\n", b"X : y\r\n",
                    b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
                    b"X: a\x00b\r\n", b"X\n: y\r\n"):  # fmt: skip
        yield _chunked(b"a\r\n" + BODY + b"\r\n0\r\n" + trailer + b"\r\n") + FOLLOW
    for byte in _BAD_BYTES:
        yield b"GET /a" + byte + b"b HTTP/1.1\r\n" + HOST + b"\r\n" + FOLLOW
        yield b"GET /a HTTP/1.1\r\n" + HOST + b"X-A" + byte + b"b: c\r\n\r\n" + FOLLOW
        yield b"GET /a HTTP/1.1\r\n" + HOST + b"X-A: b" + byte + b"c\r\n\r\n" + FOLLOW
        yield b"GET /a HTTP/1.1\r\n" + HOST + b"X-A:" + byte + b"c\r\n\r\n" + FOLLOW
        yield b"GET /a HTTP/1.1\r\n" + HOST + byte + b"X-A: c\r\n\r\n" + FOLLOW
        yield b"GET /a HTTP/1.1\r\n" + HOST + b"X-A: c\r\n" + byte + b" d\r\n\r\n" + FOLLOW
        yield _cl(headers=b"Content-Length" + byte + b": 10\r\n") + FOLLOW
    for version in _VERSIONS:
        yield b"GET / " + version + b"\r\n" + HOST + b"\r\n" + FOLLOW
    for method in _METHODS:
        yield method + b" / HTTP/1.1\r\n" + HOST + b"\r\n" + FOLLOW
    for target in _TARGETS:
        yield b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n" + FOLLOW
    yield b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n" + FOLLOW
    yield b"GET /  HTTP/1.1\r\n" + HOST + b"\r\n" + FOLLOW
    yield b"GET\t/ HTTP/1.1\r\n" + HOST + b"\r\n" + FOLLOW
    yield b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + FOLLOW
    yield b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n" + FOLLOW  # obs-fold
    yield b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n" + FOLLOW
    yield b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + FOLLOW
    yield b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 10\r\n\r\n" + (
        BODY + FOLLOW
    )
    yield b"CONNECT bidder:443 HTTP/1.1\r\nHost: bidder:443\r\n\r\n" + FOLLOW
    yield b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n" + FOLLOW
    yield b"GET / HTTP/1.0\r\n\r\n" + FOLLOW
    yield b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n" + BODY + FOLLOW


_INTERESTING = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b";", b"0", b"1", b"a", b"x",
                b"-", b"+", b"\x7f", b"\x80", b"\xff", b",", b"chunked", b"Content-Length: 1\r\n",
                b"Transfer-Encoding: chunked\r\n"]  # fmt: skip


def mutations(count: int, seed: int) -> Iterator[bytes]:
    """``count`` inputs: well-formed pipelined pairs with one to three random edits each."""
    rng = random.Random(seed)
    bases = [a + b for a in GOOD for b in GOOD]
    for _ in range(count):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.35 and at < len(data):
                del data[at : at + rng.randint(1, 3)]
            elif op < 0.7:
                data[at:at] = rng.choice(_INTERESTING)
            elif at < len(data):
                data[at : at + 1] = rng.choice(_INTERESTING)
        yield bytes(data)
