"""A bidder process paced by spend leases, against real Postgres, memcached and the coherence
bus: the pacing state and this process's lease are ``put`` into the ``pacing`` namespace of a
cache (as the pacer does), reach the bidder through memcached and the bus, and the bidder stops
bidding on the campaign when its allowance is spent and when its lease expires."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from conftest_bidder import RawClient, banner_request, bus_env, make_settings, run_uv
from conftest_bidder import running_service as running_bidder
from conftest_cache import bus, cache_settings, eventually
from prometheus_client import CollectorRegistry

from cache.app import Cache
from fleet.portfolio import load_document
from pacing.gate import CampaignPacing, HolderLeases, PacingState
from pacing.gate.namespace import PACING_NAMESPACE, STATE_KEY, lease_key, pacing_namespace
from sim.portfolio import catch_all

__all__ = ["bus"]

CAMPAIGN = 1  # the catch-all's campaign (UTC days)


def day_of(now: float) -> tuple[int, float]:
    d = datetime.fromtimestamp(now, UTC).date()
    end = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1)
    return d.toordinal(), end.timestamp()


def pacing_state(now: float, budget: int) -> PacingState:
    day, end = day_of(now)
    st = CampaignPacing(
        campaign_id=CAMPAIGN,
        day=day,
        day_end=end,
        budget=budget,
        committed=0,
        committed_at=now,
        planned=0,
        throttle=1.0,
    )
    return PacingState(issued_at=now, campaigns={CAMPAIGN: st})


def lease(holder: str, now: float, grant: int, ttl: float) -> HolderLeases:
    day, _ = day_of(now)
    return HolderLeases(
        holder=holder,
        issued_at=now,
        campaign_ids=[CAMPAIGN],
        days=[day],
        grants=[grant],
        exposures=[1_000_000],
        expires_at=[now + ttl],
    )


async def bids_until_nobid(c: RawClient, prefix: str, limit: int = 200) -> int:
    """Bid with fresh request ids until a no-bid; how many bids came first (bounded)."""
    for i in range(limit):
        reply = await c.bid(banner_request(f"{prefix}-{i}"))
        if reply.status == 204:
            return i
        assert reply.status == 200, reply.status
    raise AssertionError(f"still bidding after {limit} requests")


def test_a_bidder_stops_at_its_allowance_and_when_its_lease_expires(
    pg_dsn: str, memcached: tuple[str, int], bus: tuple[str, str]
) -> None:
    async def scenario() -> None:
        await load_document(pg_dsn, catch_all())
        settings = make_settings(
            RTBFLEET_PG_DSN=pg_dsn,
            RTBFLEET_MEMCACHED=f"{memcached[0]}:{memcached[1]}",
            RTBFLEET_BIDDER_PACING="1",
            RTBFLEET_BIDDER_SPEND_REFRESH="0.2",
            RTBFLEET_BIDDER_PACING_REPORT_SECONDS="0.2",
            **bus_env(bus),
        )
        holder = settings.name(0)
        pacer = Cache(
            cache_settings(memcached, bus, pg_dsn),
            registry=CollectorRegistry(),
            origin="pacer-test",
        )
        pacer.register(pacing_namespace())
        await pacer.start()
        try:
            async with running_bidder(settings) as service:
                link = service._pacing
                assert link is not None
                c = RawClient(service.port)
                # No pacing state yet: the budgeted campaign does not bid (fail closed).
                assert (await c.bid(banner_request("before"))).status == 204
                assert link.refused.get("unpaced", 0) >= 1

                now = time.time()
                budget = 100_000_000_000
                grant = 200_000  # a few impressions at the catch-all's bids
                await pacer.put(PACING_NAMESPACE, STATE_KEY, pacing_state(now, budget))
                await pacer.put(PACING_NAMESPACE, lease_key(holder), lease(holder, now, grant, 60))
                day, _ = day_of(now)
                assert await eventually(lambda: link.gate.pacing(CAMPAIGN) is not None, 10)

                sent = await bids_until_nobid(c, "allow")
                assert sent >= 1
                used = link.gate.ledger.used(CAMPAIGN, day)
                assert 0 < used <= grant
                assert link.refused.get("allowance", 0) >= 1

                # A renewed grant: bidding resumes.
                now = time.time()
                await pacer.put(PACING_NAMESPACE, STATE_KEY, pacing_state(now, budget))
                await pacer.put(
                    PACING_NAMESPACE, lease_key(holder), lease(holder, now, 100 * grant, 2.0)
                )
                resumed = False
                for i in range(100):
                    if (await c.bid(banner_request(f"renewed-{i}"))).status == 200:
                        resumed = True
                        break
                    await asyncio.sleep(0.02)
                assert resumed

                # Dead-man switch: the lease is not renewed; past its expiry no more bids.
                await asyncio.sleep(max(0.0, now + 2.0 - time.time()) + 0.1)
                assert (await c.bid(banner_request("expired"))).status == 204
                assert link.refused.get("expired", 0) >= 1
                assert link.gate.ledger.used(CAMPAIGN, day) <= 100 * grant
                await c.close()
        finally:
            await pacer.close()

    run_uv(scenario())
