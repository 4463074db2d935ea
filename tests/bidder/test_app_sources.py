"""The budget gate's rules, the frequency key format and the config follower over an in-process
cache, with plain data (no Postgres, no memcached, no bus)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import msgspec
from prometheus_client import CollectorRegistry

from bidder.metrics import BidderMetrics
from bidder.sources import BudgetGate, CachedSnapshot, local_day
from cache import SNAPSHOT_KEY, Cache, CacheSettings, Loaded, Namespace
from fleet.config import Campaign, ConfigSnapshot
from fleet.settings import FleetSettings

NOW = datetime(2025, 6, 2, 2, 30, tzinfo=UTC)  # still June 1st in New York


def campaign(cid: int = 1, daily: int = 100_000_000, total: int = 0, tz: str = "UTC") -> Campaign:
    return Campaign(id=cid, advertiser_id=1, name=f"c{cid}", goal_type="CPM",
                    goal_price_micros=1_000_000, max_bid_cpm_micros=10_000_000,
                    daily_budget_micros=daily, total_budget_micros=total, timezone=tz)  # fmt: skip


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


def test_fails_closed_until_spend_is_known_and_when_it_grows_old() -> None:
    clock = Clock()
    gate = BudgetGate(max_age=30.0, clock=clock)
    c, unlimited = campaign(), campaign(2, daily=0, total=0)
    assert not gate.allow(c, 2_000_000, 0.0)
    assert gate.allow(unlimited, 2_000_000, 0.0)  # nothing to overspend
    gate.update([c, unlimited], {}, {}, NOW, loaded_at=clock.now)
    assert gate.allow(c, 2_000_000, 0.0)
    clock.now += 31
    assert not gate.allow(c, 2_000_000, 0.0)


def test_daily_budget_in_the_campaigns_own_day() -> None:
    gate = BudgetGate(max_age=30.0, clock=Clock())
    utc, ny = campaign(1), campaign(2, tz="America/New_York")
    spent = 100_000_000 - 1_500  # 1.5 impressions at 1 CPM left... of the UTC day only
    by_day = {(1, date(2025, 6, 2)): spent, (2, date(2025, 6, 2)): spent}
    assert gate.update([utc, ny], by_day, {}, NOW, loaded_at=50.0) == 0
    assert gate.allow(utc, 1_000_000, 0.0)  # one impression costs 1,000 micros: fits
    assert not gate.allow(utc, 2_000_000, 0.0)  # 2,000 does not
    assert gate.allow(ny, 2_000_000, 0.0)  # New York is still on June 1st: nothing spent
    assert local_day(ny, NOW) == date(2025, 6, 1)


def test_total_budget_and_exhausted_count() -> None:
    gate = BudgetGate(max_age=30.0, clock=Clock())
    c = campaign(daily=0, total=5_000_000)
    assert gate.update([c], {}, {1: 5_000_000}, NOW, loaded_at=50.0) == 1
    assert not gate.allow(c, 10_000, 0.0)


def test_a_new_snapshot_recomputes_today_from_the_last_read() -> None:
    gate = BudgetGate(max_age=30.0, clock=Clock())
    gate.update([], {(7, date(2025, 6, 2)): 100_000_000}, {}, NOW, loaded_at=50.0)
    c = campaign(7)
    gate.set_campaigns([c], NOW)  # the campaign arrived after the spend read
    assert not gate.allow(c, 1_000_000, 0.0)


class Store:
    """What the loader reads: the "database" of a test."""

    def __init__(self) -> None:
        self.snapshot = ConfigSnapshot(advertisers=(), campaigns=(campaign(1),), version=5)
        self.down = False
        self.loads = 0

    async def load(self, key: str) -> Loaded[ConfigSnapshot | None]:
        self.loads += 1
        if self.down:
            raise ConnectionRefusedError("postgres is down")
        return Loaded(self.snapshot, self.snapshot.version)


async def test_the_follower_applies_each_new_version_once_and_keeps_the_last() -> None:
    store = Store()
    settings = CacheSettings(bus=False, fleet=FleetSettings(memcached=""), refresh_retry=0.05)
    cache = Cache(settings, registry=None)
    region = cache.register(
        Namespace("config", store.load, type=ConfigSnapshot | None, hot=(SNAPSHOT_KEY,))
    )
    applied: list[int] = []

    async def on_snapshot(snapshot: ConfigSnapshot) -> None:
        applied.append(snapshot.version)

    follower = CachedSnapshot(
        region,
        on_snapshot=on_snapshot,
        metrics=BidderMetrics(CollectorRegistry()),
        refresh_interval=0.05,
        debounce=0.0,
    )
    await cache.start()
    follower.start()
    try:
        assert (await asyncio.wait_for(follower.wait_loaded(), 5)).version == 5
        await asyncio.sleep(0.2)  # periodic checks find the same version: nothing applied
        assert applied == [5]

        store.snapshot = msgspec.structs.replace(store.snapshot, version=9, campaigns=())
        await cache.invalidate("config", SNAPSHOT_KEY, 9)  # what the watcher's message does
        for _ in range(100):
            if applied[-1] == 9:
                break
            await asyncio.sleep(0.02)
        assert applied == [5, 9] and follower.current is not None
        assert follower.current.version == 9

        store.down = True  # an invalidation nobody can serve: the last snapshot stays
        await cache.invalidate("config", SNAPSHOT_KEY, 12)
        loads = store.loads
        await asyncio.sleep(0.3)
        assert store.loads > loads  # it keeps trying
        assert applied == [5, 9] and follower.current.version == 9

        store.down = False
        store.snapshot = msgspec.structs.replace(store.snapshot, version=12)
        for _ in range(300):  # back-off: up to a few seconds
            if applied[-1] == 12:
                break
            await asyncio.sleep(0.02)
        assert applied == [5, 9, 12]
    finally:
        await follower.close()
        await cache.close()
