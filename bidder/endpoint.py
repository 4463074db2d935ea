"""``POST /openrtb2/bid``: from framed bytes to the answer on the wire, and what it records.

In order: shed (decided when the head arrived, before anything is parsed) -> gunzip within the
body limit -> the pipeline -> one more deadline check -> write -> metrics and events. Whatever
happens, the exchange gets exactly one of: a bid (200), a no-bid (204, or 200 with ``nbr`` when
configured), a 4xx with a JSON reason, or — only when the auction's tmax has already passed — no
answer at all (the connection is closed: the exchange has given up on it, and anything we sent
would be an answer after tmax). Never a 5xx: an internal error is a counted, sampled-logged 204.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from bidder.metrics import BidderMetrics
from bidder.outcome import Answer, make_late
from bidder.shedding import LoadShedder
from fleet.http import HttpLimits, Request, accepts_gzip, response_bytes

log = logging.getLogger("bidder.endpoint")

_EXCHANGE = re.compile(r"(?:^|&)exchange=([A-Za-z0-9_.-]{1,32})(?:&|$)")
_GZIP_LEVEL = 1  # bid responses are small and time is short: fastest compression
_VERSION_SAFE = re.compile(r"^[0-9][0-9.]{0,7}$")


class BidEngine(Protocol):
    """The pure core (bidder.pipeline.Pipeline) as the endpoint uses it."""

    @property
    def ready(self) -> bool: ...

    def handle(
        self,
        body: bytes,
        *,
        arrival: float,
        clock: Callable[[], float],
        wallclock: float,
        remote_ip: str = "",
        user_agent_header: str = "",
        exchange: str = "",
    ) -> Answer: ...


@dataclass(frozen=True)
class EndpointSettings:
    http: HttpLimits = dataclasses.field(default_factory=HttpLimits)  # the body limit
    gzip_responses: bool = True
    error_log_every: int = 1000


class BidEndpoint:
    """The bid path's HTTP side. ``ready`` says whether bidding may start (snapshot, model and
    spend figures loaded); ``publish`` takes each answer as it went out (its events for the
    event bus, its bids and opportunities for the pacing link), without blocking."""

    def __init__(
        self,
        engine: BidEngine,
        shedder: LoadShedder,
        metrics: BidderMetrics,
        *,
        settings: EndpointSettings,
        publish: Callable[[Answer], None],
        ready: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.shedder = shedder
        self.metrics = metrics
        self.settings = settings
        self.publish = publish
        self.ready = ready
        self.clock = clock
        self.wallclock = wallclock
        self.draining = False
        self.errors = 0

    # -- what the server calls --------------------------------------------------------------

    def begin(self, in_flight: int) -> str | None:
        if self.draining:
            return None  # answered normally, with Connection: close
        return self.shedder.admit(in_flight, self.clock())

    def arrival_correction(self) -> float:
        return self.shedder.staleness(self.clock())

    def serve(
        self,
        head: Request,
        body: bytes,
        *,
        arrival: float,
        shed: str | None,
        remote_ip: str,
        close: bool,
        write: Callable[[bytes], None],
    ) -> bool:
        """Answer one request; True when the connection must be closed without an answer."""
        version = _common_headers(head, close)
        if shed is not None:
            write(response_bytes(204, headers=version, close=close))
            self.metrics.shed_request(shed, self.clock() - arrival)
            return False
        try:
            return self._serve(head, body, arrival, remote_ip, close, write, version)
        except Exception:
            self.errors += 1
            if self.errors % self.settings.error_log_every == 1:
                log.exception("internal error answering a bid request (1 in %d logged)",
                              self.settings.error_log_every)  # fmt: skip
            self.metrics.error("endpoint")
            write(response_bytes(204, headers=version, close=close))
            self.metrics.request("error", "internal", self.clock() - arrival)
            return False

    # -- the request ------------------------------------------------------------------------

    def _serve(
        self,
        head: Request,
        body: bytes,
        arrival: float,
        remote_ip: str,
        close: bool,
        write: Callable[[bytes], None],
        version: bytes,
    ) -> bool:
        encoding = head.headers.get(b"content-encoding", b"").lower()  # stripped when parsed
        if encoding and encoding != b"identity":
            if encoding not in (b"gzip", b"x-gzip"):
                write(_json_error(415, "unsupported content-encoding", close=close, extra=version))
                self.metrics.request("invalid", "encoding", self.clock() - arrival)
                return False
            try:
                body = gunzip(body, self.settings.http.max_body_bytes)
            except _TooLarge:
                write(_json_error(413, "request body too large", close=close, extra=version))
                self.metrics.request("invalid", "too_large", self.clock() - arrival)
                return False
            except (zlib.error, EOFError):
                write(_json_error(400, "body is not valid gzip", close=close, extra=version))
                self.metrics.request("invalid", "bad_gzip", self.clock() - arrival)
                return False
        if not self.ready():
            write(response_bytes(204, headers=version, close=close))
            self.metrics.request("nobid", "not_ready", self.clock() - arrival)
            return False
        answer = self.engine.handle(
            body,
            arrival=arrival,
            clock=self.clock,
            wallclock=self.wallclock(),
            remote_ip=remote_ip,
            user_agent_header=head.header(b"user-agent"),
            exchange=_exchange(head.target),
        )
        status, payload = answer.status, answer.body
        if answer.outcome == "late" or status == 200:
            # The last check before the wire: a bid only before the answer's deadline, anything
            # at all only before tmax itself (both computed by the pipeline).
            now = self.clock()
            if now >= answer.expires:
                make_late(answer)
                self._after(answer, "late", arrival, now, dropped=True)
                return True
            if answer.outcome == "late" or (answer.bids and now >= answer.deadline):
                status, payload = 204, b""
                make_late(answer)
        extra = version
        if (
            payload
            and status == 200
            and self.settings.gzip_responses
            and accepts_gzip(head.headers.get(b"accept-encoding"))
        ):
            payload = gzip_bytes(payload)
            extra += b"Content-Encoding: gzip\r\n"
        write(response_bytes(status, payload, headers=extra, close=close))
        self._after(answer, answer.outcome, arrival, self.clock(), dropped=False)
        return False

    def _after(
        self, answer: Answer, outcome: str, arrival: float, now: float, *, dropped: bool
    ) -> None:
        self.metrics.request(outcome, answer.reason, now - arrival, answer.candidates)
        if outcome == "bid":
            for b in answer.bids:
                self.metrics.bid(b.campaign_id, b.price_cpm_micros)
        if dropped:
            self.metrics.error("late_dropped")
        if answer.events:
            self.publish(answer)


class _TooLarge(Exception):
    pass


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body (several members allowed); _TooLarge past ``limit`` bytes,
    zlib.error or EOFError when it is not complete, valid gzip."""
    out = bytearray()
    while True:
        d = zlib.decompressobj(wbits=31)
        out += d.decompress(data, limit + 1 - len(out))
        if len(out) > limit or d.unconsumed_tail:
            raise _TooLarge
        if not d.eof:
            raise EOFError("truncated gzip body")
        data = d.unused_data
        if not data.strip(b"\x00"):
            return bytes(out)


def gzip_bytes(data: bytes) -> bytes:
    c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _exchange(target: str) -> str:
    """The exchange's name from ``?exchange=...`` (a bounded token), else empty."""
    _, _, query = target.partition("?")
    if not query:
        return ""
    m = _EXCHANGE.search(query)
    return m.group(1).lower() if m else ""


# the x-openrtb-version line to answer, per header value received (exchanges send a handful)
_version_lines: dict[bytes | None, bytes] = {}
_VERSION_LINES_MAX = 64


def _common_headers(head: Request, close: bool) -> bytes:
    """The echoed x-openrtb-version, and keep-alive spelled out for an HTTP/1.0 client."""
    received = head.headers.get(b"x-openrtb-version")
    lines = _version_lines.get(received)
    if lines is None:
        lines = b"x-openrtb-version: " + openrtb_version(head).encode() + b"\r\n"
        if len(_version_lines) < _VERSION_LINES_MAX:
            _version_lines[received] = lines
    if not close and head.version == "HTTP/1.0":
        lines += b"Connection: keep-alive\r\n"
    return lines


def openrtb_version(head: Request, default: str = "2.6") -> str:
    """The ``x-openrtb-version`` to echo: the request's when it looks like a version."""
    value = head.headers.get(b"x-openrtb-version")
    if value is None:
        return default
    text = value.decode("latin-1").strip()
    return text if _VERSION_SAFE.match(text) else default


def _json_error(status: int, reason: str, *, close: bool, extra: bytes = b"") -> bytes:
    body = msgspec.json.encode({"error": reason})
    return response_bytes(status, body, headers=extra, close=close)
