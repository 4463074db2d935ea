"""The plan: per campaign and local day, the target cumulative spend through the day (in the
kernel: the pacer plans with it and the simulator's report measures spend against it).

A day runs from local midnight to the next local midnight in the campaign's timezone, so it has
23, 24 or 25 hours. Each hour gets a share of the day's budget:

- ``asap``: the whole budget is due at once (the plan is the budget from the first instant);
- ``even``: in proportion to the campaign's traffic in that hour of the week (its own eligible
  opportunities, learnt; uniform until there is history), so an even campaign spends where its
  supply is, not at 03:00 when there is none.

Hours outside the flight, and outside the campaign's dayparting (``targeting.hours_of_week``,
in its timezone: it cannot bid then), get nothing. An optional hourly cap bounds each hour's
share; what it removes goes to the other hours in proportion to their weight (water-filling),
and what no hour can take is not planned at all. Within an hour the target rises linearly.

Everything here is pure: the day, the profile and the caps are arguments; amounts are integer
micros and the cumulative targets are exact (the last equals the day's planned total).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HOURS_PER_WEEK: Final = 168
_UTC: Final = ZoneInfo("UTC")


def zone(name: str) -> ZoneInfo:
    """The campaign's timezone; UTC when the name is unknown (as the bidder's budget gate)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _UTC


def local_day(tz: ZoneInfo, now: float) -> date:
    """The local calendar day at ``now`` (seconds since the epoch)."""
    return datetime.fromtimestamp(now, tz).date()


def hour_of_week(tz: ZoneInfo, at: float) -> int:
    """0 = Monday 00:00 local time .. 167 (as ``targeting.hours_of_week``)."""
    local = datetime.fromtimestamp(at, tz)
    return local.weekday() * 24 + local.hour


def day_hours(tz: ZoneInfo, day: date) -> list[float]:
    """The instants (epoch seconds) at which the local day's hours start, plus its end: 24 or 25
    or 26 values. Local hours are taken from UTC instants, so DST changes are exact."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
    bounds = []
    t = start
    while t < end:
        bounds.append(t.timestamp())
        t += timedelta(hours=1)
    bounds.append(end.timestamp())
    return bounds


@dataclass(frozen=True, slots=True)
class Profile:
    """Relative traffic per hour of week (168 non-negative weights, not all zero)."""

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != HOURS_PER_WEEK:
            raise ValueError(f"a profile has {HOURS_PER_WEEK} hourly weights")
        if any(not math.isfinite(w) or w < 0 for w in self.weights) or not any(self.weights):
            raise ValueError("profile weights are finite, non-negative and not all zero")

    @staticmethod
    def uniform() -> Profile:
        return Profile((1.0,) * HOURS_PER_WEEK)


def learn_profile(counts: Sequence[int], prior_per_hour: float = 50.0) -> Profile:
    """The profile from a campaign's eligible-opportunity counts per hour of week.

    Each hour's weight is its count plus ``prior_per_hour`` pseudo-opportunities shared evenly:
    with no history the profile is uniform, and an hour seen once does not get all the budget.
    Hours whose counts are unknown count as 0 (the prior still gives them a little).
    """
    if len(counts) != HOURS_PER_WEEK:
        raise ValueError(f"opportunity counts cover {HOURS_PER_WEEK} hours of the week")
    if prior_per_hour <= 0:
        raise ValueError("prior_per_hour must be greater than 0")
    return Profile(tuple(max(0, c) + prior_per_hour for c in counts))


@dataclass(frozen=True, slots=True)
class DayPlan:
    """Target cumulative spend (micros) at each hour boundary of one local day."""

    campaign_id: int
    day: date
    bounds: tuple[float, ...]  # hour starts and the day's end, epoch seconds
    cumulative: tuple[int, ...]  # same length: 0 at the start, ``total`` at the end
    hourly: tuple[int, ...]  # planned spend per hour (len(bounds) - 1)
    total: int  # what the day plans to spend (<= the day's budget)
    budget: int  # the day's budget: min(daily budget, what the total budget leaves)
    hourly_cap: int  # 0: none
    asap: bool = False  # each hour's share is due at its start

    @property
    def start(self) -> float:
        return self.bounds[0]

    @property
    def end(self) -> float:
        return self.bounds[-1]

    def hour_index(self, at: float) -> int:
        """Which hour of the day ``at`` falls in (clamped to the day)."""
        b = self.bounds
        if at <= b[0]:
            return 0
        if at >= b[-1]:
            return len(b) - 2
        lo, hi = 0, len(b) - 1
        while hi - lo > 1:  # b[lo] <= at < b[hi]
            mid = (lo + hi) // 2
            if b[mid] <= at:
                lo = mid
            else:
                hi = mid
        return lo

    def target(self, at: float) -> int:
        """Planned cumulative spend at ``at``: linear within each hour."""
        b, cum = self.bounds, self.cumulative
        if at >= b[-1]:
            return self.total
        if at < b[0]:
            return 0
        i = self.hour_index(at)
        if self.asap:
            return cum[i + 1]
        span = b[i + 1] - b[i]
        return cum[i] + int((cum[i + 1] - cum[i]) * ((at - b[i]) / span))

    def hour_cap_left(self, at: float, spent_this_hour: int) -> int | None:
        """What the hourly cap still allows in ``at``'s hour (None: no hourly cap)."""
        if not self.hourly_cap:
            return None
        return max(0, self.hourly_cap - spent_this_hour)


def _water_fill(weights: list[float], amount: int, cap: int) -> list[int]:
    """Split ``amount`` in proportion to ``weights``, each share at most ``cap`` (0: none),
    giving what capped hours cannot take to the others; exact integers (largest remainder)."""
    n = len(weights)
    shares = [0] * n
    open_ = [i for i in range(n) if weights[i] > 0]
    left = amount
    while left > 0 and open_:
        total_w = sum(weights[i] for i in open_)
        raw = {i: left * weights[i] / total_w for i in open_}
        if cap:
            over = [i for i in open_ if shares[i] + raw[i] >= cap]
            if over:  # fill those to the cap and go round again with the rest
                for i in over:
                    left -= cap - shares[i]
                    shares[i] = cap
                open_ = [i for i in open_ if i not in over]
                continue
        floors = {i: int(raw[i]) for i in open_}
        rest = left - sum(floors.values())
        order = sorted(open_, key=lambda i: raw[i] - floors[i], reverse=True)
        for k, i in enumerate(order):
            shares[i] += floors[i] + (1 if k < rest else 0)
        left = 0
    return shares


def day_budget(
    daily_budget: int, total_budget: int, spent_before_today: int, days_left_in_flight: int | None
) -> int:
    """What the day may spend: the daily budget, within what the total budget leaves. A campaign
    with only a total budget and a flight end spreads what is left evenly over the days left;
    with neither a daily budget nor a flight end it may spend its whole remainder today."""
    left = max(0, total_budget - spent_before_today) if total_budget else None
    if daily_budget:
        return daily_budget if left is None else min(daily_budget, left)
    if left is None:
        return 0  # no budget at all: nothing to plan (the campaign is not paced)
    if days_left_in_flight:
        return -(-left // days_left_in_flight)
    return left


def make_plan(
    campaign_id: int,
    tz: ZoneInfo,
    day: date,
    budget: int,
    mode: str,
    profile: Profile,
    *,
    hourly_cap: int = 0,
    flight_start: float | None = None,
    flight_end: float | None = None,
    hours_of_week: Collection[int] = (),
) -> DayPlan:
    """The day's plan (see the module doc). ``budget``: from :func:`day_budget`;
    ``hours_of_week``: the campaign's dayparting (empty: every hour)."""
    daypart = frozenset(hours_of_week)
    if budget < 0 or hourly_cap < 0:
        raise ValueError("budgets and caps are non-negative")
    bounds = day_hours(tz, day)
    n = len(bounds) - 1
    weights: list[float] = []
    for i in range(n):
        lo, hi = bounds[i], bounds[i + 1]
        a = max(lo, flight_start) if flight_start is not None else lo
        b = min(hi, flight_end) if flight_end is not None else hi
        inside = max(0.0, b - a) / (hi - lo)  # the share of the hour inside the flight
        if daypart and hour_of_week(tz, lo) not in daypart:
            inside = 0.0
        w = 1.0 if mode == "asap" else profile.weights[hour_of_week(tz, lo)]
        weights.append(w * inside)
    if mode == "asap":
        # Due at once: each hour of the flight takes what it can (the cap) in order.
        hourly = [0] * n
        left = budget
        for i in range(n):
            if weights[i] > 0 and left > 0:
                hourly[i] = min(left, hourly_cap) if hourly_cap else left
                left -= hourly[i]
    else:
        hourly = _water_fill(weights, budget, hourly_cap)
    cumulative = [0]
    for h in hourly:
        cumulative.append(cumulative[-1] + h)
    return DayPlan(
        campaign_id,
        day,
        tuple(bounds),
        tuple(cumulative),
        tuple(hourly),
        cumulative[-1],
        budget,
        hourly_cap,
        mode == "asap",
    )
