"""Wiring: the HTTP side (``/healthz``, ``/readyz``, ``/metrics``), the creative feed's cache, and
``run()`` that holds one bid logger until it is told to stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
import tornado.httpserver
import tornado.web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bidlogger.service import BidLogger, tune_gc
from bidlogger.settings import BidloggerSettings
from cache.app import Cache, default_origin
from cache.creative_stats import COUNTS_KEY, CREATIVE_NAMESPACE, CreativeCounts, creative_namespace

log = logging.getLogger("bidlogger")


class HealthHandler(tornado.web.RequestHandler):
    """``/healthz`` and ``/readyz``: 200 with the logger's state while it listens. Postgres or
    the object store being down does not make it unhealthy: batches and files wait on disk
    (the alerts watch the spool and the outbox)."""

    def initialize(self, logger: BidLogger) -> None:
        self.logger = logger

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(self.logger.health()))


class MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


def make_app(logger: BidLogger, registry: CollectorRegistry) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/healthz", HealthHandler, {"logger": logger}),
            (r"/readyz", HealthHandler, {"logger": logger}),
            (r"/metrics", MetricsHandler, {"registry": registry}),
        ]
    )


class FeedPublisher:
    """Publishes the creative counts fleet-wide through the cache (L2 and the coherence bus)."""

    def __init__(self, cache: Cache, window_seconds: int) -> None:
        self.cache = cache
        self.window_seconds = window_seconds
        self.published = 0

    async def __call__(self, feed: dict[int, tuple[int, int, bool]], event_time: float) -> None:
        counts = CreativeCounts(
            as_of=event_time,
            window_seconds=self.window_seconds,
            estimated=any(est for _, _, est in feed.values()),
            counts={cid: (imps, clicks) for cid, (imps, clicks, _) in feed.items()},
        )
        await self.cache.put(CREATIVE_NAMESPACE, COUNTS_KEY, counts)
        self.published += 1


async def run(
    settings: BidloggerSettings,
    dsn: str,
    *,
    stop: asyncio.Event,
    registry: CollectorRegistry,
    on_listening: Any = None,
) -> None:
    """Run one bid logger (and its HTTP side) until ``stop`` is set."""
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    cache = Cache(settings.cache, registry=registry, origin=default_origin("bidlogger"))
    cache.register(creative_namespace(pool))
    logger: BidLogger | None = None
    server: tornado.httpserver.HTTPServer | None = None
    try:
        await cache.start()
        publisher = FeedPublisher(cache, settings.feed_window_days * 86_400)
        logger = BidLogger(settings, dsn, registry=registry, publish_feed=publisher)
        await logger.start()
        tune_gc(settings.gc_young)  # this process's heap, once started
        server = tornado.httpserver.HTTPServer(make_app(logger, registry))
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        log.info(
            "bid logger %s: health on http://%s:%d/healthz", logger.logger_id, settings.host, port
        )
        if on_listening is not None:
            on_listening(port)
        await stop.wait()
    finally:
        if server is not None:
            server.stop()
        if logger is not None:
            await logger.close()
        await cache.close()
        await pool.close()
