"""The tracker's HTTP server: ``/win /bill /loss /imp /click /postback`` as routes of the fleet's
HTTP/1.1 core (fleet/http: llhttp framing, one write per answer, limits and timers), answered by
the transport-independent ``Tracker.begin`` and ``finish``; every other path goes to a small
``tornado.web.Application`` that serves ``GET /healthz``, ``/readyz`` and ``/metrics``.

A notice's time is the fleet clock's reading when its route is called (the notice windows are
minutes and hours long: the loop's lag does not matter to them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from fleet.http import HttpLimits, HttpMetrics, HttpServer, Request, Response
from tracker.notices import NOTICE_PATHS, POSTBACK_PATH, Pending, Step
from tracker.notices import Response as TrackerResponse

log = logging.getLogger("tracker.app")

ROUTE_METHODS = ("GET", "POST")  # HEAD comes with GET


class Handles(Protocol):
    """What the routes need: ``tracker.notices.Tracker.begin`` and ``finish``."""

    def begin(self, method: str, path: str, query: str | bytes, now: float) -> Step: ...

    def finish(self, pending: Pending) -> TrackerResponse: ...


class TrackerRoute:
    """One tracker path. ``now`` is the fleet clock (seconds)."""

    __slots__ = ("_plain", "now", "tracker")

    def __init__(self, tracker: Callable[[], Handles], now: Callable[[], float]) -> None:
        self.tracker = tracker
        self.now = now
        # the 204s (billing and loss notices) by their headers: the same few, converted once
        # (a Response is only read to be written)
        self._plain: dict[tuple[int, tuple[tuple[str, str], ...]], Response] = {}

    async def __call__(self, request: Request) -> Response:
        tracker = self.tracker()
        step = tracker.begin(request.method, request.path, request.query, self.now())
        # a notice: plain functions, then one await of its batch's future
        if isinstance(step, Pending):
            await step.batch.future
            answer = tracker.finish(step)
        elif isinstance(step, TrackerResponse):
            answer = step
        else:
            answer = await step
        if answer.status == 204:
            key = (204, tuple(answer.headers))
            plain = self._plain.get(key)
            if plain is None:
                plain = self._response(answer)
                if len(self._plain) < 16:
                    self._plain[key] = plain
            return plain
        return self._response(answer)

    @staticmethod
    def _response(answer: TrackerResponse) -> Response:
        content_type = b"application/json"
        extra: list[tuple[str, str]] = []
        for name, value in answer.headers:
            if name.lower() == "content-type":
                content_type = value.encode("latin-1")
            else:
                extra.append((name, value))
        return Response(answer.status, answer.body, extra, content_type=content_type)


def make_server(
    tracker: Callable[[], Handles],
    app: web.Application,
    limits: HttpLimits,
    registry: CollectorRegistry,
    now: Callable[[], float],
) -> HttpServer:
    """The server of one tracker process, every tracker path routed to ``tracker()``."""
    server = HttpServer(limits, metrics=HttpMetrics(registry), app=app)
    route = TrackerRoute(tracker, now)
    for path in (*NOTICE_PATHS, POSTBACK_PATH):
        server.route(path, route, methods=ROUTE_METHODS)
    return server


# -- the Application: health, readiness, metrics ------------------------------------------------


class _Base(web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"error": self._reason})


class HealthHandler(_Base):
    def get(self) -> None:
        self.write({"status": "ok"})


class ReadyHandler(_Base):
    def initialize(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    def get(self) -> None:
        ready = self.ready()
        self.set_status(200 if ready else 503)
        self.write({"ready": ready})


class MetricsHandler(_Base):
    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


class NotFoundHandler(_Base):
    def prepare(self) -> None:
        self.set_status(404)
        self.finish({"error": "no such path"})


def _quiet(handler: web.RequestHandler) -> None:
    """Probes and scrapes are not worth a log line."""
    if handler.get_status() >= 500:
        log.warning(
            "%s %s -> %d", handler.request.method, handler.request.uri, handler.get_status()
        )


def make_application(*, ready: Callable[[], bool], registry: CollectorRegistry) -> web.Application:
    return web.Application(
        [
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler, {"ready": ready}),
            (r"/metrics", MetricsHandler, {"registry": registry}),
        ],
        default_handler_class=NotFoundHandler,
        log_function=_quiet,
    )
