"""One bidder server process: the pipeline wired to its data sources, the event bus, metrics and
the HTTP server.

Start order: metrics -> model -> data sources (the cache with the config snapshot, spend,
frequency) -> pipeline -> event publisher -> lag probe -> HTTP (listening at once; bids wait for
readiness and get 204 until then). Stop order (``stop()``): stop accepting and drain
connections, stop the probe and the sources, close the cache and its Postgres pool, flush and
close the event publisher, close the memcached pool.

The config snapshot comes through the cache (``config``/``snapshot``): a change in Postgres
reaches this process as an invalidation from the config watcher over the coherence bus, and the
targeting index is rebuilt off the request path when the snapshot's version moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from bidder.app import make_application, make_server
from bidder.collector import LongLived
from bidder.creative import CreativePerformance, NoPerformance
from bidder.endpoint import BidEndpoint, EndpointSettings
from bidder.frequency import MemcachedFrequency, NoFrequencyData, memcached_client
from bidder.metrics import (
    BidderMetrics,
    CollectorMirror,
    exposition,
    multiprocess_enabled,
    top_campaign_ids,
)
from bidder.models import LearntMarket, ModelFeed, start_model_feed
from bidder.outcome import Answer
from bidder.pacing_link import PacingLink, gate_settings
from bidder.pipeline import Pipeline
from bidder.scoring import HashedLinearModel, Model, PriorModel
from bidder.settings import BidderSettings
from bidder.shedding import LagProbe, LoadShedder, SheddingPolicy
from bidder.sources import (
    BudgetGate,
    CachedSnapshot,
    PortfolioFile,
    SpendReader,
    UnlimitedGate,
)
from cache import Cache, config_namespace, default_origin
from cache.creative_stats import CreativeFeed, creative_namespace
from fleet.aio import cancel_and_wait
from fleet.clock import FleetClock
from fleet.config import Campaign, ConfigSnapshot
from fleet.events import encode, topic_for
from fleet.http import HttpServer
from pacing.gate.namespace import pacing_namespace

log = logging.getLogger("bidder.service")

EVENT_BATCH_DELAY = 0.020  # seconds a topic's first event waits for company
EVENT_HWM = 10_000  # messages queued per socket at most
GAUGE_INTERVAL = 0.02  # seconds between updates of the lag, shed share and readiness gauges


class BidderService:
    """``await start()``, then ``port`` is served; ``await stop()`` shuts down gracefully."""

    def __init__(
        self,
        settings: BidderSettings,
        *,
        index: int = 0,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
        clock: FleetClock | None = None,
        long_lived: LongLived | None = None,
    ) -> None:
        self.settings = settings
        # the collector's policy after each install (the server process's; None leaves the
        # collector alone, as in a test's process)
        self.long_lived = long_lived
        # Fleet time: dayparting, flights, budget days and event times read it; deadlines and
        # timeouts stay on the monotonic clock.
        self.clock = clock or settings.fleet.clock()
        self.index = index
        self.registry = registry or CollectorRegistry()
        self.metrics = BidderMetrics(self.registry, top_campaigns=settings.metrics_top_campaigns)
        self.rng = rng or random.Random()
        self.snapshot: ConfigSnapshot | None = None
        self.model_loaded = False
        self.port = 0
        self.pipeline: Pipeline | None = None
        self.server: HttpServer | None = None
        self.endpoint: BidEndpoint | None = None
        self.publisher: Any = None
        self._snapshot_source: CachedSnapshot | None = None
        self.cache: Cache | None = None
        self._pool: asyncpg.Pool | None = None
        self._mirror: CollectorMirror | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self._file_task: asyncio.Task[None] | None = None
        self._spend: SpendReader | None = None
        self._gate: BudgetGate | UnlimitedGate = UnlimitedGate()
        self._frequency: MemcachedFrequency | NoFrequencyData = NoFrequencyData()
        self._probe: LagProbe | None = None
        self._pacing: PacingLink | None = None  # with the cache, when settings.pacing
        self._snapshot_lock = asyncio.Lock()
        self._config_loaded = asyncio.Event()
        # The bid loggers' creative feed (impressions, clicks) once the cache runs; else none.
        self._performance: CreativePerformance = NoPerformance()
        self.market = LearntMarket()  # the learnt market table once a model brings one
        self.model_feed: ModelFeed | None = None

    # -- readiness ----------------------------------------------------------------------------

    def ready_parts(self) -> dict[str, bool]:
        pipeline = self.pipeline
        return {
            "config": pipeline is not None and pipeline.ready,
            "model": self.model_loaded,
            "spend": self._gate.loaded,
        }

    def is_ready(self) -> bool:
        """``ready_parts`` all true (asked per bid request: no dictionary built)."""
        pipeline = self.pipeline
        return pipeline is not None and pipeline.ready and self.model_loaded and self._gate.loaded

    async def wait_ready(self, timeout: float | None) -> None:
        """Until the first snapshot and spend figures are in; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            await self._config_loaded.wait()
            if self._spend is not None:
                await self._spend.first_read.wait()

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.metrics.fold_each_iteration(asyncio.get_running_loop().call_soon)
        model = await self._load_model()
        await self._start_sources()
        self.pipeline = Pipeline(
            s.to_pipeline_settings(self.index),
            gate=self._gate if self._pacing is None else self._pacing,
            frequency=self._frequency,
            model=model,
            market=self.market,
            performance=self._performance,
            rng=self.rng,
        )
        self.model_feed = await start_model_feed(
            self._pool, self.cache, self.pipeline, self.market, s.model_check_s
        )
        self.model_loaded = True
        if s.snapshot_file:
            path = Path(s.snapshot_file)
            mtime = _file_stamp(await asyncio.to_thread(path.stat))
            reader = PortfolioFile(path)
            await self._apply_snapshot(reader.read())
            self._file_task = asyncio.get_running_loop().create_task(
                self._watch_file(reader, mtime), name="portfolio-file"
            )
        elif self._snapshot_source is not None:
            self._snapshot_source.start()
        await self._start_publisher()
        if self._pacing is not None and self.cache is not None:
            await self._pacing.start(self.cache, s.fleet, s.pacing_report_s, clock=self.clock.now)
        shedder = LoadShedder(
            SheddingPolicy(
                enabled=s.shed_enabled,
                max_wait=s.shed_wait_ms / 1000.0,
                max_in_flight=s.shed_max_in_flight,
                probe_interval=s.lag_probe_ms / 1000.0,
            )
        )
        self._probe = LagProbe(
            s.lag_probe_ms / 1000.0, self._observe_lag(shedder), expect=shedder.expect_probe
        )
        self._probe.start()
        self.endpoint = BidEndpoint(
            self.pipeline,
            shedder,
            self.metrics,
            settings=EndpointSettings(
                http=s.http,
                gzip_responses=s.gzip_responses,
                error_log_every=s.error_log_every,
            ),
            publish=self._publish,
            ready=self.is_ready,
            wallclock=self.clock.now,
        )
        app = make_application(ready=self.ready_parts, exposition=self._exposition)
        self.server = make_server(self.endpoint, app, s.http, self.registry)
        self.port = await self.server.listen(s.port, s.host)
        log.info("bidder %s listening on %s:%d", s.name(self.index), s.host, self.port)

    async def _load_model(self) -> Model:
        path = self.settings.model_file
        if not path:
            return PriorModel()
        data = await asyncio.to_thread(Path(path).read_bytes)
        model = await asyncio.to_thread(HashedLinearModel.from_bytes, data)
        log.info("model version %d loaded from %s", model.version, path)
        return model

    async def _start_sources(self) -> None:
        s, fleet = self.settings, self.settings.fleet
        if fleet.pg_dsn:
            gate = BudgetGate(max_age=max(30.0, 10 * s.spend_refresh_s))
            self._gate = gate
            self._spend = SpendReader(
                fleet.pg_dsn,
                gate,
                self._campaigns,
                metrics=self.metrics,
                interval=s.spend_refresh_s,
                clock=self.clock,
            )
            self._spend.start()
            if not s.snapshot_file:
                await self._start_cache(fleet.pg_dsn)
        else:
            log.warning("no Postgres configured: budgets are NOT enforced (load tests only)")
        servers = fleet.memcached_servers
        if servers:
            frequency = MemcachedFrequency(
                memcached_client(servers, s.frequency_threads),
                metrics=self.metrics,
                ttl=s.frequency_ttl_s,
                bid_window=s.frequency_bid_window_s,
                threads=s.frequency_threads,
                max_pending=s.frequency_max_pending,
            )
            frequency.start()
            self._frequency = frequency

    async def _start_cache(self, dsn: str) -> None:
        """The cache with the config namespace; its Postgres pool connects on first use, so a
        Postgres that is down at start only delays readiness."""
        s = self.settings
        self._pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=2, timeout=s.cache.load_timeout
        )
        cache = Cache(s.cache, registry=self.registry, origin=default_origin(s.name(self.index)))
        region = cache.register(config_namespace(self._pool))
        if s.pacing and isinstance(self._gate, BudgetGate):
            self._pacing = PacingLink(
                s.name(self.index),
                self._gate,
                rng=self.rng,
                settings=gate_settings(self.clock.scale),
            )
            cache.register(pacing_namespace(s.name(self.index)))
        self._performance = CreativeFeed(cache.register(creative_namespace(self._pool)))
        self._snapshot_source = CachedSnapshot(
            region,
            on_snapshot=self._apply_snapshot,
            metrics=self.metrics,
            refresh_interval=s.snapshot_refresh_s,
            debounce=s.notify_debounce_ms / 1000.0,
            load_timeout=2 * s.cache.load_timeout,
        )
        await cache.start()
        self.cache = cache
        if multiprocess_enabled():  # the cache's collector is not in the values files
            self._mirror = CollectorMirror(
                self.registry, "cache_", gauge_modes={"cache_l2_up": "livemin"}
            )
            self._mirror_task = asyncio.get_running_loop().create_task(
                self._mirror_loop(), name="cache-metrics"
            )

    async def _watch_file(self, reader: PortfolioFile, mtime: tuple[int, int]) -> None:
        """Serve the portfolio file's new content when it changes (checked every second);
        a document that does not load is logged and the old one kept. A change is a new
        modification time or size: a file read while being written (a parse error) is read
        again once its writer is done, even when the last write kept the time it had (the
        kernel's clock ticks in milliseconds). Campaigns whose text did not change keep the
        objects served (``PortfolioFile``), so the update finds the changed ones quickly."""
        path = reader.path
        while True:
            await asyncio.sleep(1.0)
            try:
                now = _file_stamp(await asyncio.to_thread(path.stat))
                if now == mtime:
                    continue
                mtime = now
                snapshot = await asyncio.to_thread(reader.read)
            except Exception as exc:  # a half-written or broken file: keep serving the old
                self.metrics.snapshot_loads.labels("error").inc()
                log.warning("portfolio file %s not reloaded: %s", path, exc)
                continue
            await self._apply_snapshot(snapshot)

    async def _mirror_loop(self) -> None:
        while self._mirror is not None:
            self._sync_mirror()
            await asyncio.sleep(1.0)

    def _sync_mirror(self) -> None:
        if self._mirror is not None:
            try:
                self._mirror.sync()
            except Exception:  # metrics must never take the server down
                self.metrics.error("cache_metrics")
                log.exception("copying the cache's metrics failed")

    def _exposition(self) -> bytes:
        self._sync_mirror()
        self.metrics.fold()  # the multiprocess exposition reads the values files only
        return exposition(self.registry)

    def _campaigns(self) -> Sequence[Campaign]:
        return self.snapshot.campaigns if self.snapshot is not None else ()

    async def _apply_snapshot(self, snapshot: ConfigSnapshot) -> None:
        """Build the targeting index in a worker thread (the loop keeps serving with the old
        one) and swap it in; the pipeline's swap is a single reference assignment."""
        pipeline = self.pipeline
        assert pipeline is not None
        async with self._snapshot_lock:
            incremental, seconds = await asyncio.to_thread(_timed, pipeline.set_snapshot, snapshot)
            # the labelled campaigns chosen off the loop too (a pass over the portfolio)
            labelled = await asyncio.to_thread(
                top_campaign_ids, snapshot, self.metrics.top_campaigns
            )
            self.metrics.snapshot_apply.labels("incremental" if incremental else "full").set(
                seconds
            )
            self.snapshot = snapshot
            if isinstance(self._gate, BudgetGate):
                self._gate.set_campaigns(snapshot.campaigns, self.clock.now_utc())
            self.metrics.set_portfolio(snapshot, labelled)
            if self.long_lived is not None:
                self.long_lived.installed()
            self.metrics.ready.set(1 if self.is_ready() else 0)
            self._config_loaded.set()
            log.info("config version %d: %d campaigns", snapshot.version, len(snapshot.campaigns))

    async def _start_publisher(self) -> None:
        if not self.settings.publish_events:
            return
        from fleet.bus import Publisher
        from fleet.errors import BusError

        publisher = Publisher(
            self.settings.fleet.event_bus_in,
            publisher_id=self.settings.name(self.index),
            # 64 partitions x several event types are many topics: a batch of 2 ms would hold
            # about one event. Bounded memory: past the high-water mark events are counted drops.
            batch_delay=EVENT_BATCH_DELAY,
            hwm=EVENT_HWM,
            registry=self.registry,
        )
        try:
            await publisher.start()
        except BusError as exc:  # bids matter more than their events: run on, loudly
            self.metrics.error("publisher_start")
            log.error("event bus %s unusable, bidding without events: %s", publisher.endpoint, exc)
            return
        self.publisher = publisher

    def _publish(self, answer: Answer) -> None:
        """An answer as it went out: its opportunities counted and its bids reserved by the
        pacing link, its events published."""
        if self._pacing is not None:
            self._pacing.sent(answer, self.clock.now())
        events = answer.events
        publisher = self.publisher
        if publisher is None:
            return
        partitions = self.settings.fleet.event_partitions
        try:
            for event in events:
                publisher.publish(topic_for(event, partitions), encode(event))
        except Exception:  # a closed bus must never fail a bid
            self.metrics.error("publish")
            return
        self.metrics.events_published(len(events))

    def _observe_lag(self, shedder: LoadShedder) -> Any:
        """The lag probe's report (every few milliseconds); the gauges follow it every
        ``GAUGE_INTERVAL``."""
        metrics = self.metrics
        update_at = 0.0

        def observe(lag: float, cpu: float) -> None:
            nonlocal update_at
            shedder.observe_lag(lag, cpu)
            now = time.monotonic()
            if now < update_at:
                return
            update_at = now + GAUGE_INTERVAL
            metrics.loop_lag.set(lag)
            metrics.shed_share.set(shedder.share)
            if self.server is not None:
                metrics.in_flight.set(self.server.in_flight)
            metrics.ready.set(1 if self.is_ready() else 0)

        return observe

    # -- stop ---------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting, drain, cancel loops, flush the publisher, close pools. Idempotent."""
        if self.endpoint is not None:
            self.endpoint.draining = True
        if self.server is not None:
            await self.server.shutdown(self.settings.drain_timeout_s)
            self.server = None
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        if self._pacing is not None:
            await self._pacing.close()
        for source in (self._snapshot_source, self._spend):
            if source is not None:
                await source.close()
        self._snapshot_source = self._spend = None
        task, self._mirror_task = self._mirror_task, None
        await cancel_and_wait(task)
        task, self._file_task = self._file_task, None
        await cancel_and_wait(task)
        self._sync_mirror()
        self._mirror = None
        if self.model_feed is not None:
            await self.model_feed.close()
            self.model_feed = None
        if self.cache is not None:
            await self.cache.close()
            self.cache = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._pool.close()
            self._pool.terminate()
            self._pool = None
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.close()
            self.publisher = None
        if isinstance(self._frequency, MemcachedFrequency):
            await self._frequency.close()
            self._frequency = NoFrequencyData()
        self.metrics.fold_each_iteration(None)  # the loop may close: fold on collection only
        self.metrics.fold()


def _file_stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_mtime_ns, st.st_size


def _timed(apply: Callable[[ConfigSnapshot], bool], snapshot: ConfigSnapshot) -> tuple[bool, float]:
    """(what ``apply`` returned, its duration in seconds), measured in the thread running it."""
    start = time.perf_counter()
    result = apply(snapshot)
    return result, time.perf_counter() - start
