"""The framing against llhttp's own verdicts, on known smuggling vectors and mutated requests.

The reference is a bare llhttp parser in its strict mode (``reference``). For every input, the
framer (fleet.http.framing) must
- never accept what llhttp refuses: its requests are a prefix of llhttp's (it may refuse more:
  HTTP/2.0 as a version, more than one stray CRLF, a transfer coding other than chunked ...);
- never frame a body differently: each request it completes has llhttp's method, target,
  headers and body;
- frame the same whether the input comes whole or cut into random pieces.

``check`` is the differential check itself; the last tests show it fails when a known vector
is let back in (a framer with llhttp's lenient modes switched on), so that a green run means
something.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import httptools
import pytest
from http_vectors import known_vectors, mutations

from fleet.http import Framer, HttpLimits

LIMITS = HttpLimits(max_header_bytes=1 << 20, max_body_bytes=1 << 20, max_chunks=1 << 20)
Framed = tuple[str, str, tuple[tuple[bytes, bytes], ...], bytes]


@dataclass
class _Reference:
    """llhttp alone: the messages it completes before it stops (error or upgrade)."""

    messages: list[Framed] = field(default_factory=list)
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    in_body: bool = False
    parser: httptools.HttpRequestParser | None = None

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.in_body = b"", [], b"", False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_body:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_body = True

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        assert self.parser is not None
        method = self.parser.get_method().decode()
        self.messages.append((method, self.url.decode("latin-1"), tuple(self.headers), self.body))


def reference(data: bytes) -> tuple[list[Framed], bool]:
    """(messages llhttp completes, whether it refused what followed them)."""
    ref = _Reference()
    ref.parser = httptools.HttpRequestParser(ref)
    try:
        ref.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return ref.messages, False
    except httptools.HttpParserError:
        return ref.messages, True
    return ref.messages, False


def ours(
    data: bytes, pieces: Iterable[bytes] | None = None, framer: Framer | None = None
) -> tuple[list[Framed], bool]:
    framer = framer or Framer(LIMITS)
    for piece in pieces if pieces is not None else (data,):
        framer.feed(piece, 0.0)
    framed = [(r.method, r.target, tuple(r.raw_headers), r.body) for r in framer.requests]
    return framed, framer.error is not None


def split(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def check(inputs: Iterable[bytes], make: type[Framer] = Framer, seed: int = 7) -> list[str]:
    """Every disagreement with llhttp, described (empty: none)."""
    rng = random.Random(seed)
    problems = []
    for data in inputs:
        expected, _ = reference(data)
        whole, _ = ours(data, framer=make(LIMITS))
        if whole != expected[: len(whole)]:
            problems.append(f"framed differently from llhttp: {data!r}")
            continue
        if len(data) > 1:
            pieces, _ = ours(data, split(data, rng), framer=make(LIMITS))
            # a split may only make ours stop earlier (e.g. a stray CRLF seen at the start of a
            # read rather than after a request), never frame something else
            if pieces != whole[: len(pieces)] or (
                len(pieces) < len(whole) and not _split_sensitive(data)
            ):
                problems.append(f"framed differently when split: {data!r}")
    return problems


def _split_sensitive(data: bytes) -> bool:
    return b"\r\n\r\n\r\n" in data or data.startswith((b"\r", b"\n"))


KNOWN = list(known_vectors())


def test_there_are_a_few_hundred_known_vectors_and_llhttp_refuses_most_of_them() -> None:
    assert len(KNOWN) >= 300
    refused = sum(reference(v)[1] for v in KNOWN)
    assert refused >= len(KNOWN) // 2


def test_known_vectors_are_framed_as_llhttp_frames_them_or_refused() -> None:
    assert check(KNOWN) == []


def test_mutated_requests_are_framed_as_llhttp_frames_them_or_refused() -> None:
    inputs = list(mutations(4000, seed=20261207))
    assert check(inputs) == []


def test_the_smuggling_vectors_of_the_report_are_refused() -> None:
    follow = b"GET /hidden HTTP/1.1\r\n\r\n"
    for attack in (
        b"POST /openrtb2/bid HTTP/1.1\r\nX: a\nContent-Length: %d\r\n\r\n" % len(follow),
        b"POST /openrtb2/bid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n",
        b"POST /openrtb2/bid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n",
        b"POST /openrtb2/bid HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n",
    ):
        framed, refused = ours(attack + follow)
        assert refused and not any(target == "/hidden" for _, target, _, _ in framed), attack


class _Lax(Framer):
    leniencies: ClassVar[dict[str, bool]] = {}

    def _make_parser(self) -> httptools.HttpRequestParser:
        parser = super()._make_parser()
        parser.set_dangerous_leniencies(**self.leniencies)
        return parser


@pytest.mark.parametrize(
    "leniency",
    [
        "lenient_optional_cr_before_lf",  # bare LF accepted again
        "lenient_headers",  # control bytes in header values
        "lenient_chunked_length",  # Content-Length with Transfer-Encoding
        "lenient_spaces_after_chunk_size",
        "lenient_optional_crlf_after_chunk",
        "lenient_transfer_encoding",
    ],
)
def test_the_check_fails_when_a_known_vector_is_let_back_in(leniency: str) -> None:
    lax = type("Lax", (_Lax,), {"leniencies": {leniency: True}})
    problems = check(KNOWN, make=lax)
    assert problems, f"the differential check did not notice {leniency}"
