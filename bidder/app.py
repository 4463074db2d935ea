"""The bidder's HTTP server: ``POST /openrtb2/bid`` as a route of the fleet's HTTP/1.1 core
(fleet/http: llhttp framing, one write per answer, limits and timers), answered by
``BidEndpoint``; every other path goes to an ordinary ``tornado.web.Application`` that serves
``GET /healthz``, ``/readyz`` and ``/metrics`` (404 and 405 included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from tornado import web

from fleet.http import HttpLimits, HttpMetrics, HttpServer, Request

log = logging.getLogger("bidder.app")

BID_PATH = "/openrtb2/bid"


class BidHandler(Protocol):
    """What the server needs from the bid endpoint (bidder.endpoint.BidEndpoint)."""

    def begin(self, in_flight: int) -> str | None:
        """A request is complete: None to serve it, else the reason to shed it."""

    def arrival_correction(self) -> float:
        """Seconds the bytes read now probably waited before the loop saw them (loop lag)."""

    def serve(
        self,
        head: Request,
        body: bytes,
        *,
        arrival: float,
        shed: str | None,
        remote_ip: str,
        close: bool,
        write: Callable[[bytes], Any],
    ) -> bool:
        """Answer one bid request through ``write``; True to close the connection unanswered."""


class BidRoute:
    """The bid path's route: shedding is decided when the request is complete, with the
    requests complete and unanswered (in flight) at that moment."""

    __slots__ = ("endpoint", "server")

    def __init__(self, endpoint: BidHandler, server: HttpServer) -> None:
        self.endpoint = endpoint
        self.server = server

    def __call__(self, request: Request) -> bytes | None:
        endpoint = self.endpoint
        out: list[bytes] = []
        if endpoint.serve(
            request,
            request.body,
            arrival=request.received_at,
            shed=endpoint.begin(self.server.in_flight),
            remote_ip=request.remote_ip,
            close=request.close,
            write=out.append,
        ):
            return None  # past tmax: no answer at all
        return out[0] if len(out) == 1 else b"".join(out)


def make_server(
    endpoint: BidHandler,
    app: web.Application,
    limits: HttpLimits,
    registry: CollectorRegistry,
) -> HttpServer:
    """The server of one bidder process, the bid path routed to ``endpoint``."""
    server = HttpServer(
        limits, metrics=HttpMetrics(registry), app=app, lag=endpoint.arrival_correction
    )
    server.route(BID_PATH, BidRoute(endpoint, server), methods=("POST",))
    return server


# -- the Application: health, readiness, metrics ------------------------------------------------


class _Base(web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason})

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})


class HealthHandler(_Base):
    def get(self) -> None:
        self.write({"status": "ok"})


class ReadyHandler(_Base):
    def initialize(self, ready: Callable[[], dict[str, bool]]) -> None:
        self.ready = ready

    def get(self) -> None:
        parts = self.ready()
        self.set_status(200 if all(parts.values()) else 503)
        self.write({"ready": all(parts.values()), **parts})


class MetricsHandler(_Base):
    def initialize(self, exposition: Callable[[], bytes]) -> None:
        self.exposition = exposition

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.write(self.exposition())


class NotFoundHandler(_Base):
    def prepare(self) -> None:
        self.fail(404, "no such path")


def _quiet(handler: web.RequestHandler) -> None:
    """Probes and scrapes are not worth a log line; failures are counted elsewhere."""
    if handler.get_status() >= 500:
        log.warning(
            "%s %s -> %d", handler.request.method, handler.request.uri, handler.get_status()
        )


def make_application(
    *, ready: Callable[[], dict[str, bool]], exposition: Callable[[], bytes]
) -> web.Application:
    return web.Application(
        [
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler, {"ready": ready}),
            (r"/metrics", MetricsHandler, {"exposition": exposition}),
        ],
        default_handler_class=NotFoundHandler,
        log_function=_quiet,
        compress_response=True,
    )
