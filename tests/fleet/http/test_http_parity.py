"""The compiled framer (fleet/http/_framing.pyx) against its pure-Python reference
(``framing.PyFramer``): fed the same bytes, whole and in the same random splits, with the same
clock, both must show the same state after every read (phase, since, continue_due, the
requests so far with every field, the error with its status, reason and metric), on the known
smuggling vectors, mutated requests, pipelines, and the limits at their edges."""

from __future__ import annotations

import random
from typing import Any

import pytest
from http_vectors import FOLLOW, GOOD, known_vectors, mutations

from fleet.http import HttpLimits
from fleet.http import framing as framing_module
from fleet.http.framing import PyFramer

compiled = pytest.importorskip("fleet.http._framing", reason="the extension is not built")
Framer = compiled.Framer

WIDE = HttpLimits(max_header_bytes=1 << 20, max_body_bytes=1 << 20, max_chunks=1 << 20)
TIGHT = HttpLimits(max_header_bytes=200, max_body_bytes=64, max_chunks=3)


def test_the_compiled_framer_is_the_one_in_use() -> None:
    assert framing_module.Framer is Framer


def _state(framer: Any) -> tuple[Any, ...]:
    requests = tuple(
        (
            r.method,
            r.target,
            r.version,
            tuple(r.raw_headers),
            tuple(sorted(r.headers.items())),
            r.body,
            r.keep_alive,
            r.close,
            r.chunked,
            r.received_at,
        )
        for r in framer.requests
    )
    error = framer.error
    verdict = None if error is None else (error.status, error.reason, error.metric)
    return (
        framer.phase,
        framer.since,
        framer.continue_due,
        framer.upgrade_refused,
        requests,
        verdict,
    )


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 16))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _differences(inputs: list[bytes], limits: HttpLimits, seed: int) -> list[str]:
    rng = random.Random(seed)
    problems = []
    for data in inputs:
        for pieces in ([data], _pieces(data, rng), [data[i : i + 1] for i in range(len(data))]):
            ours, reference = Framer(limits), PyFramer(limits)
            for i, piece in enumerate(pieces):
                now = 10.0 + i * 0.25
                ours.feed(piece, now)
                reference.feed(piece, now)
                if _state(ours) != _state(reference):
                    problems.append(f"after piece {i} of {len(pieces)}: {data[:200]!r}")
                    break
            else:
                # taking requests out between reads, as the server does, changes nothing
                ours.requests.clear()
                reference.requests.clear()
                ours.feed(FOLLOW, 99.0)
                reference.feed(FOLLOW, 99.0)
                if _state(ours) != _state(reference):
                    problems.append(f"after a following request: {data[:200]!r}")
    return problems


KNOWN = list(known_vectors())


@pytest.mark.parametrize("limits", [WIDE, TIGHT, HttpLimits()], ids=["wide", "tight", "default"])
def test_known_vectors_frame_the_same(limits: HttpLimits) -> None:
    assert len(KNOWN) >= 300
    assert _differences(KNOWN, limits, seed=3) == []


def test_mutated_requests_frame_the_same() -> None:
    inputs = list(mutations(1500, seed=20261207))
    assert _differences(inputs, WIDE, seed=5) == []
    assert _differences(inputs[:500], TIGHT, seed=6) == []


def test_pipelines_stray_crlf_and_continue_frame_the_same() -> None:
    expect = b"POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;e=1\r\nabc\r\n2\r\n\r\n\r\n0\r\nT: v\r\n\r\n"
    )
    inputs = [
        b"".join(GOOD),
        b"\r\n".join(GOOD),
        b"\r\n\r\n".join(GOOD),
        b"\r\n" + FOLLOW + b"\r\n" + FOLLOW + b"\r\n\r\n\r\n",
        expect + FOLLOW,
        chunked * 3 + b"\r\n",
        FOLLOW.replace(b"\r\n\r\n", b"\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n") + FOLLOW,
        b"GET / HTTP/1.0\r\n\r\n" + FOLLOW,
        b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n" + b"b" * 65,
    ]
    for limits, seed in ((WIDE, 1), (TIGHT, 2), (HttpLimits(), 3)):
        for round_ in range(20):
            assert _differences(inputs, limits, seed=seed * 100 + round_) == []
