"""The day plan: budgets, profiles, modes, caps, flights and DST days."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.plan import (
    HOURS_PER_WEEK,
    Profile,
    day_budget,
    day_hours,
    hour_of_week,
    learn_profile,
    make_plan,
    zone,
)

PARIS = zone("Europe/Paris")
UTC_Z = zone("UTC")


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_even_uniform_plan_spreads_the_budget_over_the_hours_exactly() -> None:
    plan = make_plan(1, UTC_Z, date(2026, 12, 7), 24_000_001, "even", Profile.uniform())
    assert len(plan.hourly) == 24
    assert sum(plan.hourly) == plan.total == 24_000_001
    assert max(plan.hourly) - min(plan.hourly) <= 1
    assert plan.target(ts(2026, 12, 7, 0, 0)) == 0
    assert plan.target(ts(2026, 12, 7, 12, 0)) == sum(plan.hourly[:12])
    assert plan.target(ts(2026, 12, 7, 12, 30)) == pytest.approx(12.5e6, abs=2)
    assert plan.target(ts(2026, 12, 8, 0, 0)) == plan.total
    assert plan.target(ts(2026, 12, 6, 23, 0)) == 0


def test_dst_days_have_23_and_25_hours_and_the_whole_budget() -> None:
    spring = make_plan(1, PARIS, date(2026, 3, 29), 23_000_000, "even", Profile.uniform())
    autumn = make_plan(1, PARIS, date(2026, 10, 25), 25_000_000, "even", Profile.uniform())
    assert len(spring.hourly) == 23 and spring.total == 23_000_000
    assert len(autumn.hourly) == 25 and autumn.total == 25_000_000
    assert spring.end - spring.start == 23 * 3600
    assert set(spring.hourly) == {1_000_000}


def test_the_profile_moves_the_budget_to_the_busy_hours_of_the_local_day() -> None:
    counts = [0] * HOURS_PER_WEEK
    monday = date(2026, 12, 7)
    counts[0 * 24 + 20] = 1_000_000  # Monday 20:00 local is busy
    plan = make_plan(1, PARIS, monday, 10_000_000, "even", learn_profile(counts))
    assert plan.hourly.index(max(plan.hourly)) == 20
    assert plan.hourly[20] > 9_000_000
    assert hour_of_week(PARIS, plan.bounds[20]) == 20


def test_no_history_is_uniform_and_the_prior_keeps_every_hour_alive() -> None:
    assert learn_profile([0] * HOURS_PER_WEEK).weights == (50.0,) * HOURS_PER_WEEK
    one = learn_profile([5] + [0] * (HOURS_PER_WEEK - 1))
    assert min(one.weights) > 0
    with pytest.raises(ValueError):
        learn_profile([0] * 24)


def test_asap_is_due_at_once_and_an_hourly_cap_spreads_it() -> None:
    day = date(2026, 12, 7)
    plan = make_plan(1, UTC_Z, day, 5_000_000, "asap", Profile.uniform())
    assert plan.target(ts(2026, 12, 7, 0, 0, 1)) == 5_000_000
    capped = make_plan(1, UTC_Z, day, 5_000_000, "asap", Profile.uniform(), hourly_cap=2_000_000)
    assert capped.hourly[:3] == (2_000_000, 2_000_000, 1_000_000)
    assert capped.target(ts(2026, 12, 7, 1, 30)) == 4_000_000


def test_an_hourly_cap_water_fills_and_never_plans_more_than_it_allows() -> None:
    counts = [0] * HOURS_PER_WEEK
    counts[12] = 10_000_000
    plan = make_plan(
        1, UTC_Z, date(2026, 12, 7), 24_000_000, "even", learn_profile(counts), hourly_cap=1_500_000
    )
    assert max(plan.hourly) <= 1_500_000
    assert plan.total == 24_000_000  # the others took what hour 12 could not
    tight = make_plan(
        1, UTC_Z, date(2026, 12, 7), 24_000_000, "even", Profile.uniform(), hourly_cap=500_000
    )
    assert tight.total == 12_000_000  # what no hour can take is not planned


def test_flight_dates_cut_the_day() -> None:
    start, end = ts(2026, 12, 7, 6, 0), ts(2026, 12, 7, 18, 0)
    plan = make_plan(
        1,
        UTC_Z,
        date(2026, 12, 7),
        12_000_000,
        "even",
        Profile.uniform(),
        flight_start=start,
        flight_end=end,
    )
    assert plan.hourly[:6] == (0,) * 6 and plan.hourly[18:] == (0,) * 6
    assert set(plan.hourly[6:18]) == {1_000_000}
    before = make_plan(
        1, UTC_Z, date(2026, 12, 7), 12_000_000, "asap", Profile.uniform(), flight_start=start
    )
    assert before.target(ts(2026, 12, 7, 5, 0)) == 0
    assert before.target(ts(2026, 12, 7, 6, 0)) == 12_000_000


def test_day_budget_takes_the_daily_within_the_total_and_spreads_a_total_over_the_flight() -> None:
    assert day_budget(10, 0, 0, None) == 10
    assert day_budget(10, 100, 95, None) == 5
    assert day_budget(0, 100, 40, 3) == 20
    assert day_budget(0, 100, 40, None) == 60
    assert day_budget(0, 0, 0, None) == 0
    assert day_budget(0, 100, 200, 2) == 0


def test_unknown_timezones_are_utc_and_day_hours_are_contiguous() -> None:
    assert zone("Not/AZone") == UTC_Z
    bounds = day_hours(PARIS, date(2026, 7, 1))
    assert all(b - a == 3600 for a, b in itertools.pairwise(bounds))


@settings(max_examples=200, deadline=None)
@given(
    budget=st.integers(0, 10**13),
    counts=st.lists(st.integers(0, 10**6), min_size=168, max_size=168),
    cap=st.integers(0, 10**12),
    mode=st.sampled_from(["even", "asap"]),
    tz=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]),
    day=st.dates(date(2026, 1, 1), date(2027, 12, 31)),
)
def test_plans_are_monotone_and_never_above_the_budget_or_the_cap(
    budget: int, counts: list[int], cap: int, mode: str, tz: str, day: date
) -> None:
    plan = make_plan(1, zone(tz), day, budget, mode, learn_profile(counts), hourly_cap=cap)
    assert plan.total <= budget
    assert all(h >= 0 for h in plan.hourly)
    if cap:
        assert max(plan.hourly) <= cap
    else:
        assert plan.total == budget
    assert list(plan.cumulative) == sorted(plan.cumulative)
    points = [plan.start + k * (plan.end - plan.start) / 97 for k in range(98)]
    targets = [plan.target(t) for t in points]
    assert targets == sorted(targets) and targets[-1] == plan.total


def test_dayparting_plans_nothing_outside_the_campaigns_hours() -> None:
    """A campaign bidding 09:00-12:00 Paris time on Mondays (hours of week 9-11) plans its
    whole Monday in those three hours, in Paris hours; on Tuesday it plans nothing."""
    monday, tuesday = date(2026, 12, 7), date(2026, 12, 8)
    plan = make_plan(1, PARIS, monday, 3_000, "even", Profile.uniform(), hours_of_week=(9, 10, 11))
    assert plan.hourly == tuple(1_000 if h in (9, 10, 11) else 0 for h in range(24))
    nine = datetime(2026, 12, 7, 9, tzinfo=PARIS).timestamp()
    assert plan.target(nine) == 0 and plan.target(nine + 3 * 3600) == 3_000
    off = make_plan(1, PARIS, tuesday, 3_000, "even", Profile.uniform(), hours_of_week=(9,))
    assert off.total == 0
    asap = make_plan(1, PARIS, monday, 3_000, "asap", Profile.uniform(), hours_of_week=(10, 11))
    assert asap.hourly[10] == 3_000 and sum(asap.hourly) == 3_000
