"""The budget gate's rules and the frequency key format, with plain data (no Postgres)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from bidder.frequency import frequency_key
from bidder.sources import BudgetGate, local_day
from fleet.config import Campaign

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


def test_frequency_keys() -> None:
    assert frequency_key(12, 86400, "i:6d92078a-8246") == "fc:12:86400:i:6d92078a-8246"
    hashed = frequency_key(12, 86400, "u:ex:has space")
    assert hashed.startswith("fc:12:86400:h") and len(hashed) == len("fc:12:86400:h") + 32
    assert frequency_key(1, 60, "x" * 500) != frequency_key(1, 60, "x" * 501)
    assert all(len(frequency_key(1, 60, u)) <= 250 for u in ("a" * 1000, "é" * 300))
