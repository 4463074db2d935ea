"""The pacer against real Postgres, memcached and the coherence bus (a real proxy process)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
from conftest_cache import bus, cache_settings, eventually, pg_conn
from prometheus_client import CollectorRegistry

from cache.app import Cache
from fleet.bus import Publisher
from fleet.plan import local_day, zone
from pacing import store
from pacing.gate import Gate, HolderLeases, PacingState
from pacing.gate.namespace import (
    PACING_NAMESPACE,
    REPORT_TOPIC,
    STATE_KEY,
    encode_report,
    lease_key,
    pacing_namespace,
)
from pacing.service import PacerService
from pacing.settings import PacerServiceSettings

__all__ = ["bus", "pg_conn"]


async def seed(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO advertisers (id, name, domain) VALUES (1, 'Acme', 'a.example')")
    rows = [
        (1, "UTC", "even", 86_400_000_000, 0, "active"),
        (2, "Asia/Tokyo", "asap", 10_000_000, 50_000_000, "active"),
        (3, "UTC", "even", 5_000_000, 0, "paused"),
        (4, "UTC", "even", 0, 0, "active"),
    ]
    for cid, tz, mode, daily, total, status in rows:
        await conn.execute(
            """INSERT INTO campaigns (id, advertiser_id, name, goal_type, goal_price_micros,
                   max_bid_cpm_micros, daily_budget_micros, total_budget_micros, timezone,
                   pacing_mode, status)
               VALUES ($1, 1, $2, 'CPM', 1000000, 2000000, $3, $4, $5, $6, $7)""",
            cid,
            f"c{cid}",
            daily,
            total,
            tz,
            mode,
            status,
        )
    await conn.execute(
        "INSERT INTO campaign_pacing (campaign_id, hourly_budget_micros) VALUES (2, 5000)"
    )


async def test_store_reads_campaigns_spend_and_learns_profiles(pg_conn: asyncpg.Connection) -> None:
    await seed(pg_conn)
    campaigns = {c.campaign_id: c for c in await store.load_campaigns(pg_conn)}
    assert campaigns[2].timezone == "Asia/Tokyo" and campaigns[2].hourly_cap == 5_000
    assert campaigns[2].pacing_mode == "asap" and campaigns[1].hourly_cap == 0
    assert not campaigns[3].active and not campaigns[4].budgeted
    now = datetime.now(UTC).timestamp()
    today = local_day(zone("Asia/Tokyo"), now)
    await pg_conn.executemany(
        "INSERT INTO campaign_spend (campaign_id, day, spent_micros) VALUES ($1, $2, $3)",
        [
            (2, today, 1_500),
            (2, today - timedelta(days=1), 7_000),
            (2, today - timedelta(days=9), 3),
        ],
    )
    spend = await store.load_spend(pg_conn, {1: local_day(zone("UTC"), now), 2: today})
    assert spend[2].today == 1_500 and spend[2].before == 7_003
    assert spend[1].today == 0 and spend[1].before == 0
    await store.add_opportunities(pg_conn, {(1, 5): 100, (1, 6): 40, (999, 1): 5})
    await store.add_opportunities(pg_conn, {(1, 5): 100})
    profiles = await store.load_opportunities(pg_conn)
    assert set(profiles) == {1}  # an unknown campaign is skipped
    assert profiles[1][5] in (199, 200) and profiles[1][6] in (39, 40) and sum(profiles[1]) < 241


def pacer_settings(
    pg_dsn: str, memcached: tuple[str, int], endpoints: tuple[str, str]
) -> PacerServiceSettings:
    cache = cache_settings(memcached, endpoints, pg_dsn)
    return dataclasses.replace(
        PacerServiceSettings(),
        interval=0.3,
        lease_ttl=1.0,
        clock_skew=0.2,
        holder_ttl=2.0,
        retry=0.2,
        profile_refresh=0.5,
        cache=cache,
    )


@contextlib.asynccontextmanager
async def running(settings: PacerServiceSettings, name: str) -> AsyncIterator[PacerService]:
    service = PacerService(settings, registry=CollectorRegistry(), origin=name)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def bidder(
    settings: PacerServiceSettings, holder: str
) -> AsyncIterator[tuple[Cache, Gate, asyncio.Event]]:
    """A bidder's side: its cache with the pacing namespace, its gate, and a task reporting
    every 0.2 s on the coherence bus (clear the event to make it fall silent)."""
    cache = Cache(settings.cache, registry=CollectorRegistry(), origin=f"cache-{holder}")
    cache.register(pacing_namespace(holder))
    publisher = Publisher(
        settings.fleet.coherence_bus_in,
        publisher_id=holder,
        heartbeat_interval=0.2,
        registry=CollectorRegistry(),
    )
    gate = Gate(holder)
    speaking = asyncio.Event()
    speaking.set()

    async def report() -> None:
        while True:
            if speaking.is_set():
                now = datetime.now(UTC).timestamp()
                gate.count_opportunities(1, 50)
                publisher.publish(REPORT_TOPIC, encode_report(gate.report(now)))
            await asyncio.sleep(0.2)

    await cache.start()
    await publisher.start()
    task = asyncio.create_task(report())
    try:
        yield cache, gate, speaking
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publisher.close()
        await cache.close()


def leases_of(cache: Cache, holder: str) -> HolderLeases | None:
    value = cache.peek(PACING_NAMESPACE, lease_key(holder))
    return value if isinstance(value, HolderLeases) else None


async def test_the_pacer_grants_leases_a_bidder_reads_from_l1(
    pg_dsn: str, pg_conn: asyncpg.Connection, memcached: tuple[str, int], bus: tuple[str, str]
) -> None:
    await seed(pg_conn)
    now = datetime.now(UTC).timestamp()
    await pg_conn.execute(
        "INSERT INTO campaign_spend (campaign_id, day, spent_micros) VALUES (1, $1, 12345)",
        local_day(zone("UTC"), now),
    )
    settings = pacer_settings(pg_dsn, memcached, bus)
    async with bidder(settings, "bidder-a") as (cache, gate, _), running(settings, "p1") as pacer:
        assert await eventually(lambda: pacer.is_leader, timeout=10)
        assert await eventually(lambda: leases_of(cache, "bidder-a") is not None, timeout=15)
        state = cache.peek(PACING_NAMESPACE, STATE_KEY)
        assert isinstance(state, PacingState)
        assert set(state.campaigns) == {1, 2}  # paused and unbudgeted ones are not paced
        assert state.campaigns[1].committed == 12_345
        assert state.campaigns[2].budget == 10_000_000
        leases = leases_of(cache, "bidder-a")
        assert leases is not None
        gate.install(state, leases)
        lease = leases.lease(2)
        # asap under an hourly cap of 5,000 (two and a half impressions at the maximum bid):
        # what the hour allows, in whole impressions, and never more
        assert lease is not None and lease.grant in (4_000, 5_000)
        t = datetime.now(UTC).timestamp()
        assert gate.check(2, 1_000_000, 0.5, t, 0.0) == ""
        assert gate.check(3, 1_000_000, 0.5, t, 0.0) == "unpaced"
        # Metrics a dashboard reads.
        assert pacer.registry is not None
        assert pacer.registry.get_sample_value("pacing_leader") == 1.0
        assert (
            pacer.registry.get_sample_value("pacing_budget_micros", {"campaign": "2"}) == 10_000_000
        )
        assert (pacer.registry.get_sample_value("pacing_leases_granted_total") or 0) > 0
        assert (pacer.registry.get_sample_value("pacing_reports_total", {"result": "ok"}) or 0) > 0

        # The bidder's opportunity counts reach campaign_opportunities (the traffic profile).
        async def counted() -> bool:
            n = await pg_conn.fetchval(
                "SELECT sum(opportunities) FROM campaign_opportunities WHERE campaign_id = 1"
            )
            return bool(n and n > 0)

        assert await eventually(counted, timeout=10)


async def test_a_silent_bidder_loses_its_lease_and_the_expiry_is_counted(
    pg_dsn: str, pg_conn: asyncpg.Connection, memcached: tuple[str, int], bus: tuple[str, str]
) -> None:
    await seed(pg_conn)
    settings = pacer_settings(pg_dsn, memcached, bus)
    async with (
        bidder(settings, "bidder-b") as (cache, _, speaking),
        running(settings, "p1") as pacer,
    ):
        assert await eventually(lambda: leases_of(cache, "bidder-b") is not None, timeout=15)
        speaking.clear()
        reg = pacer.registry
        assert reg is not None
        assert await eventually(
            lambda: (reg.get_sample_value("pacing_leases_expired_total") or 0) >= 2, timeout=15
        )
        assert pacer.last_round is not None and "bidder-b" not in pacer.last_round.leases


async def test_a_fresh_fleet_gets_leases_at_once(
    pg_dsn: str, pg_conn: asyncpg.Connection, memcached: tuple[str, int], bus: tuple[str, str]
) -> None:
    """No lease was ever granted under the lock: the first leader need not wait one out."""
    await seed(pg_conn)
    settings = dataclasses.replace(
        pacer_settings(pg_dsn, memcached, bus), lease_ttl=30.0, holder_ttl=30.0
    )
    async with bidder(settings, "bidder-f") as (cache, _, _), running(settings, "p1") as pacer:
        assert await eventually(lambda: pacer.is_leader, timeout=10)
        led = asyncio.get_running_loop().time()
        assert await eventually(lambda: leases_of(cache, "bidder-f") is not None, timeout=15)
        assert asyncio.get_running_loop().time() - led < 15.0  # not the 30 s lease lifetime
        horizon = await store.lease_horizon(pg_conn, settings.lock_key)
        leases = leases_of(cache, "bidder-f")
        assert horizon is not None and leases is not None
        assert horizon >= max(leases.expires_at)


async def test_a_standby_takes_over_and_waits_out_the_old_leases(
    pg_dsn: str, pg_conn: asyncpg.Connection, memcached: tuple[str, int], bus: tuple[str, str]
) -> None:
    await seed(pg_conn)
    settings = pacer_settings(pg_dsn, memcached, bus)
    first = PacerService(settings, registry=CollectorRegistry(), origin="p1")
    second = PacerService(settings, registry=CollectorRegistry(), origin="p2")
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    async with bidder(settings, "bidder-c") as (cache, _, _):
        task_first = asyncio.create_task(first.run(stop_first))
        task_second: asyncio.Task[None] | None = None
        try:
            assert await eventually(lambda: first.is_leader, timeout=10)
            task_second = asyncio.create_task(second.run(stop_second))
            assert await eventually(lambda: leases_of(cache, "bidder-c") is not None, timeout=15)
            await asyncio.sleep(1.0)
            assert first.is_leader and not second.is_leader  # one active, one standby
            stop_first.set()
            await asyncio.wait_for(task_first, 10)
            loop = asyncio.get_running_loop()
            stopped = loop.time()
            before = leases_of(cache, "bidder-c")
            assert before is not None
            assert await eventually(lambda: second.is_leader, timeout=5)  # within seconds
            assert loop.time() - stopped < 3.0
            assert await eventually(
                lambda: (
                    (new := leases_of(cache, "bidder-c")) is not None
                    and new.issued_at > before.issued_at
                ),
                timeout=10,
            )
            # Nothing new before every old lease ran out (its expiry plus the clock skew): the
            # lease horizon the first leader recorded in Postgres says when.
            new = leases_of(cache, "bidder-c")
            assert new is not None and before.expires_at
            assert new.issued_at >= max(before.expires_at) + settings.clock_skew
        finally:
            stop_first.set()
            stop_second.set()
            await asyncio.wait_for(task_first, 10)
            if task_second is not None:
                await asyncio.wait_for(task_second, 10)
