"""The pacer service: one active instance (a Postgres advisory lock), standbys taking over.

    service = PacerService(PacerServiceSettings.from_env(), registry=registry)
    await service.run(stop)          # until ``stop`` is set

Every instance listens to the bidders' reports (``co.pacing.report`` on the coherence bus), so
a standby is warm. The active one, every ``interval`` seconds: reads campaigns and committed
spend (``campaign_spend``), runs a :class:`pacing.pacer.Pacer` step, and ``put``s the pacing
state and each bidder's leases into the ``pacing`` namespace of the cache (memcached and the
coherence bus: bidders read them from L1). Every ``profile_refresh`` seconds it adds the
reported opportunity counts to ``campaign_opportunities`` and re-reads the traffic profiles.

Leadership is a session-level advisory lock on a dedicated connection (as the cache watcher):
if the leader dies or loses Postgres, the lock goes with its session and a standby, trying
every ``retry`` seconds, takes it. A new leader knows nothing of the leases its predecessor
granted, so it grants none until the lease horizon (in Postgres, raised by the leader before
it publishes leases) plus ``clock_skew`` has passed: by then every old lease has run out
(bidders pause for at most ``lease_ttl + clock_skew`` after a failover, not at all when the
fleet starts; nothing is ever granted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry

from cache.app import Cache, default_origin
from fleet.aio import cancel_and_wait
from fleet.bus import Subscriber
from fleet.db.leadership import lead_while_locked
from fleet.plan import hour_of_week, learn_profile, zone
from pacing import store
from pacing.errors import PacerConfigError
from pacing.gate.controller import Controller, MultiplicativeThrottle, PIThrottle
from pacing.gate.namespace import (
    PACING_NAMESPACE,
    REPORT_TOPIC,
    STATE_KEY,
    decode_report,
    lease_key,
    pacing_namespace,
)
from pacing.metrics import PacerMetrics
from pacing.pacer import CampaignBudget, Pacer, Round
from pacing.settings import PacerServiceSettings

log = logging.getLogger("pacing.service")


def controller_for(name: str) -> Controller:
    if name == "pi":
        return PIThrottle()
    return MultiplicativeThrottle()


class PacerService:
    """See the module doc."""

    def __init__(
        self,
        settings: PacerServiceSettings,
        *,
        registry: CollectorRegistry | None = None,
        origin: str | None = None,
        clock: Callable[[], float] = time.time,
        on_leader: Callable[[bool], None] | None = None,
        scale: float = 1.0,
    ) -> None:
        if not settings.fleet.pg_dsn:
            raise PacerConfigError("RTBFLEET_PG_DSN: the pacer needs a Postgres DSN")
        self.settings = settings
        self.registry = registry
        self.origin = origin or default_origin("pacer")
        self.clock = clock
        self.on_leader = on_leader
        self.metrics = PacerMetrics(registry)
        self.scale = scale  # fleet seconds per real second (``clock`` is the fleet clock)
        self.pacer = Pacer(settings.core(scale), controller_for(settings.controller))
        self.is_leader = False
        self.last_round: Round | None = None
        self._cache: Cache | None = None
        self._silent: set[str] = set()
        self._timezones: dict[int, str] = {}
        self._opportunities: dict[tuple[int, int], int] = {}

    # -- reports (every instance) -----------------------------------------------------------------
    async def _listen(self, subscriber: Subscriber) -> None:
        async for delivery in subscriber:
            if delivery.kind == "silent":
                self._silent.add(delivery.publisher_id)
                continue
            if delivery.kind != "data":
                continue  # a gap or restart: the next report (a full snapshot) repairs it
            self._silent.discard(delivery.publisher_id)
            now = self.clock()
            for payload in delivery.payloads:
                try:
                    report = decode_report(payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.metrics.reports.labels("invalid").inc()
                    log.warning("ignoring a bidder report: %s", exc)
                    continue
                if not self.pacer.report(report, now):
                    self.metrics.reports.labels("stale").inc()
                    continue
                self.metrics.reports.labels("ok").inc()
                for cid, n in report.opportunities.items():
                    tz = self._timezones.get(cid)
                    if tz is not None and n > 0:
                        key = (cid, hour_of_week(zone(tz), now))
                        self._opportunities[key] = self._opportunities.get(key, 0) + n

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        cache = self._cache = Cache(s.cache, registry=self.registry, origin=self.origin)
        cache.register(pacing_namespace())
        subscriber = Subscriber(
            s.fleet.coherence_bus_out,
            prefixes=(REPORT_TOPIC,),
            heartbeat_timeout=s.cache.heartbeat_timeout,
            registry=self.registry,
        )
        listener: asyncio.Task[None] | None = None
        try:
            await cache.start()
            await subscriber.start()
            listener = asyncio.get_running_loop().create_task(
                self._listen(subscriber), name="pacer-reports"
            )
            while not stop.is_set():
                await self._session(stop)
                if not stop.is_set():
                    await _wait(stop, s.retry)
        finally:
            self._set_leader(False)
            await cancel_and_wait(listener)
            await subscriber.close()
            await cache.close()

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings

        def failed(what: str, exc: BaseException) -> None:
            log.warning("pacer %s: %r", what, exc)
            self.metrics.steps.labels("error").inc()

        try:
            await lead_while_locked(
                s.fleet.pg_dsn,
                s.lock_key,
                application_name=f"rtbfleet-pacer-{os.getpid()}",
                retry=s.retry,
                stop=stop,
                lead=self._lead,
                on_error=failed,
            )
        finally:
            self._set_leader(False)

    async def _lead(
        self, conn: asyncpg.Connection, stop: asyncio.Event, lost: asyncio.Event
    ) -> None:
        s = self.settings
        self._set_leader(True)
        self.metrics.takeovers.inc()
        # Fresh controllers and lease books: what a predecessor granted is unknown here.
        self.pacer = Pacer(s.core(self.scale), controller_for(s.controller))
        horizon = await store.lease_horizon(conn, s.lock_key)
        wait = 0.0 if horizon is None else max(0.0, horizon + s.clock_skew - time.time())
        log.info("pacer %s leads; first leases in %.1f s", self.origin, wait)
        await _wait_either(stop, lost, wait)
        next_profiles = 0.0
        while not stop.is_set() and not lost.is_set():
            started = time.monotonic()
            if started >= next_profiles:
                await self._profiles(conn)
                next_profiles = started + s.profile_refresh
            await self.step(conn)
            elapsed = time.monotonic() - started
            await _wait_either(stop, lost, max(0.0, s.interval - elapsed))

    async def step(self, conn: asyncpg.Connection) -> Round:
        """One pacing step against Postgres, published through the cache."""
        s = self.settings
        started = time.perf_counter()
        campaigns = await store.load_campaigns(conn)
        self._timezones = {c.campaign_id: c.timezone for c in campaigns}
        now = self.clock()
        days = Pacer.days(now, [c for c in campaigns if _paced(c)])
        spend = await store.load_spend(conn, days)
        read_at = self.clock()
        alive = {n for n in self.pacer.holders if n not in self._silent}
        # committed_at: when the read began (what was committed then, it holds)
        rnd = self.pacer.step(read_at, campaigns, spend, now, alive)
        if rnd.leases:  # durable before any lease is out: a successor waits for it
            await store.raise_lease_horizon(conn, s.lock_key, time.time() + s.lease_ttl)
        await self._publish(rnd)
        self.metrics.record(rnd)
        self.metrics.steps.labels("ok").inc()
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        self.last_round = rnd
        return rnd

    async def _publish(self, rnd: Round) -> None:
        cache = self._cache
        assert cache is not None
        await cache.put(PACING_NAMESPACE, STATE_KEY, rnd.state)
        for holder, leases in rnd.leases.items():
            await cache.put(PACING_NAMESPACE, lease_key(holder), leases)

    async def _profiles(self, conn: asyncpg.Connection) -> None:
        counts, self._opportunities = self._opportunities, {}
        await store.add_opportunities(conn, counts)
        for cid, hourly in (await store.load_opportunities(conn)).items():
            self.pacer.set_profile(cid, learn_profile(hourly))

    def _set_leader(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            self.metrics.leader.set(1 if leading else 0)
            if self.on_leader is not None:
                self.on_leader(leading)


def _paced(c: CampaignBudget) -> bool:
    return c.active and c.budgeted


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_either(a: asyncio.Event, b: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until either event is set."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
