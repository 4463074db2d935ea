"""Budgets sized against the simulator's supply: every hour of an even campaign's plan fits
in its supply with the margin asked, the supply-limited ones on purpose do not, and an
"as fast as possible" campaign's budget fits each local day's supply."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from fleet.money import MICROS_PER_UNIT
from sim import portfolio
from sim.market import Market, MarketParams
from sim.pacing_report import planned_between
from sim.sizing import (
    ENOUGH,
    LIMITED,
    Span,
    _micros,
    _smoothed,
    hourly_supply,
    least_budget,
    size_budgets,
)

START = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday
SPAN = Span(START.timestamp(), 6 * 3600.0, 6 * 3600.0 / 576 * 400)  # --duration 37.5


def _budget(c: dict[str, object]) -> int:
    return round(float(str(c["daily_budget"])) * MICROS_PER_UNIT)


def test_even_plans_fit_their_hourly_supply_and_a_few_are_limited_on_purpose() -> None:
    market = Market(MarketParams(users=800, placements=60), 5)
    document = portfolio.generate(12, seed=5, now=START)
    supply = hourly_supply(
        market, document["campaigns"], SPAN, 1200, random.Random("5:sizing")
    )  # the draws size_budgets makes
    sized = size_budgets(document, market, SPAN, samples=1200, seed=5)
    limited = 0
    for i, c in enumerate(sized["campaigns"]):
        budget = _budget(c)
        assert budget >= least_budget(c) >= 3 * _micros(c["max_bid_cpm"]) // 1000
        assert budget % 10_000 == 0  # whole cents
        if c["pacing_mode"] == "asap" or not supply[i].any():
            continue
        ratio = LIMITED if i % 10 == 3 else ENOUGH
        limited += ratio == LIMITED
        if budget == least_budget(c):
            continue  # raised to the least a campaign may have: supply-limited
        have = _smoothed(supply[i])
        for h in range(SPAN.hours):
            t0 = SPAN.start + h * 3600
            planned = planned_between(
                budget,
                t0,
                t0 + 3600,
                timezone=str(c["timezone"]),
                flight_start=c["flight_start"],
                hours_of_week=c["targeting"].get("hours_of_week", ()),  # type: ignore[attr-defined]
            )
            assert planned * ratio <= have[h] + 10_000 * ratio  # rounding to whole cents
    assert limited >= 1


def test_the_same_seed_gives_the_same_budgets() -> None:
    market = Market(MarketParams(users=500, placements=40), 2)
    one = size_budgets(portfolio.generate(6, seed=2, now=START), market, SPAN, samples=600)
    two = size_budgets(portfolio.generate(6, seed=2, now=START), market, SPAN, samples=600)
    assert [c["daily_budget"] for c in one["campaigns"]] == [
        c["daily_budget"] for c in two["campaigns"]
    ]
    assert len({c["daily_budget"] for c in one["campaigns"]}) > 1
