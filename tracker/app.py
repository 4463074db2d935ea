"""The tracker's HTTP server: ``/win /bill /loss /imp /click /postback`` as routes of the fleet's
HTTP/1.1 core (fleet/http: llhttp framing, one write per answer, limits and timers), answered by
the transport-independent ``Tracker.begin`` and ``finish_all``; every other path goes to a small
``tornado.web.Application`` that serves ``GET /healthz``, ``/readyz`` and ``/metrics``.

A notice waiting for its group commit is answered with a future (the HTTP core answers it from
its done callback: no task or coroutine per notice); the batch's one callback settles the
answers of all its notices when it commits.

A notice's time is the fleet clock's reading when its route is called (the notice windows are
minutes and hours long: the loop's lag does not matter to them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from fleet.http import HttpLimits, HttpMetrics, HttpServer, Request, Response
from tracker.batch import Batch
from tracker.notices import NO_CONTENT, NOTICE_PATHS, POSTBACK_PATH, Pending, Step
from tracker.notices import Response as TrackerResponse

log = logging.getLogger("tracker.app")

ROUTE_METHODS = ("GET", "POST")  # HEAD comes with GET


class Handles(Protocol):
    """What the routes need: ``tracker.notices.Tracker.begin`` and ``finish_all``."""

    def begin(self, method: str, path: str, query: str | bytes, now: float) -> Step: ...

    def finish_all(self, pendings: Sequence[Pending]) -> list[TrackerResponse]: ...


class TrackerRoute:
    """One tracker path. ``now`` is the fleet clock (seconds)."""

    __slots__ = ("_no_content", "now", "tracker")

    def __init__(self, tracker: Callable[[], Handles], now: Callable[[], float]) -> None:
        self.tracker = tracker
        self.now = now
        # billing and loss notices' one answer, converted once (a Response is only read)
        self._no_content = self._response(NO_CONTENT)

    def __call__(
        self, request: Request
    ) -> Response | asyncio.Future[Response] | Coroutine[Any, Any, Response]:
        tracker = self.tracker()
        step = tracker.begin(request.method, request.path, request.query, self.now())
        if isinstance(step, Pending):
            # a notice: a future, settled with the others of its batch by the batch's callback
            batch = step.batch
            future: asyncio.Future[Response] = batch.future.get_loop().create_future()
            if not batch.waiting:
                batch.future.add_done_callback(functools.partial(self._settle, tracker, batch))
            batch.waiting.append((step, future))
            return future
        if isinstance(step, TrackerResponse):
            return self._convert(step)
        return self._later(step)

    def _settle(self, tracker: Handles, batch: Batch, _: object) -> None:
        """The batch committed (or failed): answer each of its notices' futures."""
        waiting: list[tuple[Pending, asyncio.Future[Response]]] = batch.waiting
        batch.waiting = []  # each Pending holds its batch: no cycle left for the collector
        try:
            answers = tracker.finish_all([pending for pending, _ in waiting])
        except Exception as exc:  # a bug: every future of the batch fails (answered 500)
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(waiting, answers, strict=True):
            if not future.done():
                future.set_result(self._convert(answer))

    async def _later(self, step: Coroutine[Any, Any, TrackerResponse]) -> Response:
        return self._convert(await step)

    def _convert(self, answer: TrackerResponse) -> Response:
        if answer is NO_CONTENT:
            return self._no_content
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
