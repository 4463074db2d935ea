"""The demo report's pacing figures from a hand-made auction table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np

from sim import pacing_report
from sim.ledger import WON
from sim.report import CampaignPlan

DAILY = 2_400_000_000  # USD micros a day: 100 USD an hour on an even plan


def table(rows: list[tuple[float, int, int]]) -> dict[str, np.ndarray]:
    """(simulated second, campaign id, clearing CPM in USD micros) per billed win."""
    return {
        "t_sim": np.array([r[0] for r in rows], dtype=np.float64),
        "campaign_id": np.array([r[1] for r in rows], dtype=np.int64),
        "clear_usd_micros": np.array([r[2] for r in rows], dtype=np.int64),
        "outcome": np.full(len(rows), WON, dtype=np.int8),
        "billed": np.ones(len(rows), dtype=np.int8),
    }


def plan(cid: int, mode: str = "even", daily: int = DAILY) -> CampaignPlan:
    return CampaignPlan(cid, f"c{cid}", "CPM", 1, daily, "USD", mode)


def test_hourly_error_utilisation_and_overdelivery() -> None:
    hour_cost = 100_000_000 * 1000  # one impression at this CPM costs 100 USD
    rows = [(10.0, 1, hour_cost), (3_700.0, 1, hour_cost), (3_800.0, 1, hour_cost)]
    rows += [(100.0, 2, hour_cost)]
    fig = pacing_report.figures(table(rows), [plan(1), plan(2, "asap")], 2 * 3600.0)
    one, two = fig["campaigns"]
    assert one["spend_micros"] == 300_000_000 and one["planned_micros"] == 200_000_000
    assert one["utilisation"] == 1.5 and one["overdelivery_share"] == 0.0
    assert one["hours_within_20pct"] == 0.5 and one["hourly_mape"] == 0.5  # on plan, then 2x
    assert two["hours_within_20pct"] is None  # asap: no hourly plan
    assert two["planned_micros"] == DAILY  # asap: the day's budget is due at once
    assert fig["portfolio"]["utilisation"] == 400 / 2_600
    lines = pacing_report.lines(fig)
    assert lines[0].startswith("Pacing") and "portfolio" in lines[-1]


def test_spend_beyond_the_days_budget_is_overdelivery() -> None:
    rows = [(10.0, 1, 3_000_000_000_000)]  # 3,000 USD in one impression, budget 2,400
    fig = pacing_report.figures(table(rows), [plan(1)], 3600.0)
    assert fig["campaigns"][0]["overdelivery_share"] == 600 / 2400
    assert pacing_report.figures(table([]), [plan(1)], 0.0)["portfolio"] is None


MIDNIGHT = datetime(2026, 12, 7, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def test_the_plan_is_the_pacers_in_the_campaigns_timezone_flight_and_dayparting() -> None:
    """A run from midnight UTC: a New York campaign whose flight starts then plans its whole
    first local day (December 6th) in the five hours left of it, then December 7th evenly; a
    campaign bidding 09:00-12:00 London time plans nothing outside those hours."""
    ny = dataclasses.replace(plan(1), timezone="America/New_York", flight_start=MIDNIGHT)
    daypart = dataclasses.replace(plan(2), timezone="Europe/London", hours_of_week=(9, 10, 11))
    fig = pacing_report.figures(table([]), [ny, daypart], 7 * 3600.0, MIDNIGHT)
    one, two = fig["campaigns"]
    assert one["plan_hourly_micros"][:5] == [DAILY // 5] * 5
    assert one["plan_hourly_micros"][5:] == [DAILY // 24] * 2
    assert two["plan_hourly_micros"] == [0] * 7  # Monday 00:00-07:00: no dayparted hour yet
    assert two["planned_micros"] == 0 and two["utilisation"] is None


def test_overdelivery_is_counted_per_local_day() -> None:
    """Tokyo's day ends at 15:00 UTC: spend of a whole budget on each side of it is on plan."""
    tokyo = dataclasses.replace(plan(1), timezone="Asia/Tokyo")
    cpm = DAILY * 1000  # one impression costs the daily budget
    on_plan = pacing_report.figures(
        table([(3_600.0, 1, cpm), (16 * 3_600.0, 1, cpm)]), [tokyo], 20 * 3600.0, MIDNIGHT
    )
    assert on_plan["campaigns"][0]["overdelivery_share"] == 0.0
    over = pacing_report.figures(
        table([(3_600.0, 1, cpm), (7_200.0, 1, cpm)]), [tokyo], 20 * 3600.0, MIDNIGHT
    )
    assert over["campaigns"][0]["overdelivery_share"] == 1.0
