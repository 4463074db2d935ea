"""Wiring: one tracker process's components built from its settings, started and closed in
order. The HTTP server core mounts ``TrackerService.tracker.handle``; the service registration
and ``__main__`` come with the fleet's service skeleton.

Shutdown order: stop the rule loop, commit what is queued, close the catalog, memcached and the
event publisher, move what waits for Kinesis into the spool, close the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from prometheus_client import CollectorRegistry

from fleet import signing
from fleet.aio import cancel_and_wait
from fleet.bus import Publisher
from fleet.events import AnyEvent, encode, topic_for
from tracker.conversions import ConversionStore
from tracker.cpa import Rule
from tracker.errors import Unavailable
from tracker.kinesis import KinesisSink, boto3_client
from tracker.memcache import FrequencyWriter, hash_client
from tracker.metrics import TrackerMetrics
from tracker.notices import Streams, Tracker
from tracker.pauses import CpaRule
from tracker.settings import TrackerSettings
from tracker.store import (
    CatalogSource,
    GroupCommitter,
    create_pool,
    fold_lanes,
    purge,
    spend_lanes,
)

log = logging.getLogger("tracker.service")


class TrackerService:
    def __init__(
        self,
        settings: TrackerSettings,
        registry: CollectorRegistry,
        *,
        publish_events: bool = True,
        clock: Callable[[], float] = time.time,
        scale: float = 1.0,
        name: str = "tracker-0",
        first_lane: int | None = None,
    ) -> None:
        """``first_lane``: the first of this process's spend lanes (by default a random one,
        so that the fleet's tracker processes mostly commit on lanes of their own)."""
        self.settings = settings
        self.registry = registry
        self.metrics = TrackerMetrics(registry)
        self.publish_events = publish_events
        self.clock = clock  # fleet time (FleetClock.now; time.time in a wall-time fleet)
        self.scale = scale  # fleet seconds per real second (the fleet clock's scale)
        self.name = name
        if first_lane is None:
            first_lane = random.SystemRandom().randrange(settings.spend_lanes)
        self.lanes = spend_lanes(first_lane, settings.batch_concurrency, settings.spend_lanes)
        self.pool: asyncpg.Pool | None = None
        self.committer: GroupCommitter | None = None
        self.catalog: CatalogSource | None = None
        self.frequency: FrequencyWriter | None = None
        self.publisher: Publisher | None = None
        self.kinesis: KinesisSink | None = None
        self._tracker: Tracker | None = None
        self._loops: list[asyncio.Task[None]] = []

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            raise RuntimeError("the tracker service is not started")
        return self._tracker

    async def start(self, dsn: str) -> Tracker:
        s = self.settings
        self.pool = await create_pool(dsn, s.pool_size, opened=s.batch_concurrency + 1)
        self.committer = GroupCommitter(
            self.pool,
            self.metrics,
            batch_max=s.batch_max,
            concurrency=s.batch_concurrency,
            timeout=s.pg_timeout,
            lanes=self.lanes,
        )
        self.committer.start()
        log.info("committing spend on lanes %s", ",".join(map(str, self.lanes)))
        self.catalog = CatalogSource(self.pool, self.metrics, refresh=s.catalog_refresh)
        await self.catalog.start()
        if s.fleet.memcached_servers:
            self.frequency = FrequencyWriter(
                hash_client(s.fleet.memcached_servers, s.frequency_threads),
                self.metrics,
                threads=s.frequency_threads,
                max_pending=s.frequency_max_pending,
                time_scale=self.scale,
            )
        publish = None
        if self.publish_events:
            self.publisher = Publisher(
                s.fleet.event_bus_in, publisher_id=self.name, registry=self.registry
            )
            await self.publisher.start()
            publish = self._publish
        if s.kinesis:
            endpoint, region = s.kinesis_endpoint, s.kinesis_region
            self.kinesis = KinesisSink(
                lambda: boto3_client(endpoint, region),
                s.spool_path,
                self.metrics,
                max_bytes=s.spool_max_bytes,
            )
            self.kinesis.start()
        self._tracker = Tracker(
            keys=signing.KeySet(s.fleet.signing_key_bytes, s.fleet.previous_signing_key_bytes),
            user_secret=s.fleet.user_key_secret_bytes,
            public_url=s.fleet.tracker_url,
            committer=self.committer,
            catalog=self.catalog,
            conversions=ConversionStore(self.pool, timeout=s.pg_timeout),
            metrics=self.metrics,
            frequency=self.frequency,
            publish=publish,
            kinesis=self.kinesis,
            streams=Streams(s.stream_attributed, s.stream_organic),
            partners=s.postback_partners,
        )
        rule = Rule(s.cpa_factor, s.cpa_min_spend_micros, s.cpa_rounds)
        self._loops.append(
            asyncio.create_task(self._cpa_loop(CpaRule(self.pool, rule, self.metrics)))
        )
        self._loops.append(asyncio.create_task(self._purge_loop()))
        return self._tracker

    def _publish(self, event: AnyEvent) -> None:
        assert self.publisher is not None
        self.publisher.publish(
            topic_for(event, self.settings.fleet.event_partitions), encode(event)
        )

    async def _cpa_loop(self, rule: CpaRule) -> None:
        """Every ``cpa_interval`` seconds of fleet time (checked each fleet second, at most 20
        times a real second)."""
        due = self.clock() + self.settings.cpa_interval
        while True:
            await asyncio.sleep(max(0.05, min(1.0, 1.0 / self.scale)))
            if self.clock() < due:
                continue
            due = self.clock() + self.settings.cpa_interval
            try:
                await rule.run_once()
            except (Unavailable, OSError, asyncpg.PostgresError) as exc:
                log.warning("cost per activation not evaluated: %s", exc)

    async def _purge_loop(self) -> None:
        """Hourly: forget old dedupe rows, and fold the spend lanes of the days three or more
        days old (UTC, fleet time: no campaign timezone's today or yesterday) into one row."""
        assert self.pool is not None
        while True:
            await asyncio.sleep(3600)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await purge(self.pool, self.clock() - self.settings.retention_seconds)
            before = datetime.fromtimestamp(self.clock() - 2 * 86400, UTC).date()
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                folded = await fold_lanes(self.pool, before)
                log.info("folded %d spend lane rows of the days before %s", folded, before)

    async def close(self) -> None:
        for task in self._loops:
            await cancel_and_wait(task)
        if self.committer is not None:
            await self.committer.close()
        if self.catalog is not None:
            await self.catalog.close()
        if self.frequency is not None:
            await self.frequency.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.kinesis is not None:
            await asyncio.to_thread(self.kinesis.close)
        if self.pool is not None:
            await self.pool.close()
