"""Wiring: ``/healthz``, ``/readyz`` and ``/metrics`` over one learner service, and ``run()``
that holds it until told to stop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import tornado.httpserver
import tornado.netutil
import tornado.web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from learner.service import LearnerService
from learner.settings import LearnerSettings

log = logging.getLogger("learner")


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, service: LearnerService) -> None:
        self.service = service

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(self.service.health()))


class MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


def make_app(service: LearnerService, registry: CollectorRegistry) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/healthz", HealthHandler, {"service": service}),
            (r"/readyz", HealthHandler, {"service": service}),
            (r"/metrics", MetricsHandler, {"registry": registry}),
        ]
    )


async def run(
    settings: LearnerSettings,
    dsn: str,
    *,
    stop: asyncio.Event,
    registry: CollectorRegistry,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Run one learner (and its HTTP side) until ``stop`` is set; a clean stop exports and
    checkpoints once more."""
    service = LearnerService(settings, dsn, registry=registry)
    server: tornado.httpserver.HTTPServer | None = None
    await service.start()
    try:
        server = tornado.httpserver.HTTPServer(make_app(service, registry))
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        log.info("learner %s: health on http://%s:%d/healthz", settings.share, settings.host, port)
        if on_listening is not None:
            on_listening(port)
        await stop.wait()
    finally:
        if server is not None:
            server.stop()
        await service.stop()
