"""The fleet clock: the time whose business meaning depends on the time of day.

Budget days in a campaign's timezone, dayparting, spend days, frequency periods, flights, and
later pacing plans and attribution windows all read *fleet time*. Deployed, fleet time is wall
time. A simulation compresses it: with a scale of 576 a day passes in 150 real seconds, and
every service that reads this clock agrees on which simulated hour it is.

    fleet(t) = start + (t - origin) * scale        t: wall time (Unix seconds)

``origin`` is the wall time at which the fleet clock reads ``start`` (``start`` defaults to
``origin``, so that fleet time equals wall time at the origin). With the defaults (scale 1,
origin 0) fleet time is wall time. Every process of a fleet gets the same three settings
(``RTBFLEET_CLOCK_SCALE``, ``RTBFLEET_CLOCK_ORIGIN``, ``RTBFLEET_CLOCK_START``), so they agree
without talking to each other.

Timeouts, deadlines, retries and cache lifetimes stay on real time (``time.monotonic``): a
request's tmax is real milliseconds whatever the simulated hour.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def parse_instant(value: str) -> float:
    """An ISO 8601 date and time with a UTC offset, or Unix seconds, as Unix seconds.

    Raises ValueError with the reason."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError("must be a finite number of seconds")
        return seconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "must be ISO 8601 with a UTC offset (2026-06-01T00:00:00+00:00) or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset (+00:00)")
    return parsed.timestamp()


def instant_check(value: str) -> str | None:
    """A settings check: empty, or an instant :func:`parse_instant` reads."""
    if not value:
        return None
    try:
        parse_instant(value)
    except ValueError as exc:
        return str(exc)
    return None


def scale_check(value: float) -> str | None:
    ok = math.isfinite(value) and 0 < value <= 1_000_000
    return None if ok else "must be greater than 0 and at most 1000000"


@dataclass(frozen=True)
class FleetClock:
    """``now()`` in fleet seconds since the epoch; a pure function of the wall clock."""

    scale: float = 1.0
    origin: float = 0.0  # wall time (Unix seconds) at which the clock reads ``start``
    start: float = 0.0  # fleet time at ``origin``
    wall: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    def __post_init__(self) -> None:
        reason = scale_check(self.scale)
        if reason:
            raise ValueError(f"clock scale {self.scale!r} {reason}")

    @classmethod
    def from_settings(
        cls, scale: float, origin: str, start: str, wall: Callable[[], float] = time.time
    ) -> FleetClock:
        """From the settings' strings: an empty origin is the epoch, an empty start the
        origin."""
        at = parse_instant(origin) if origin else 0.0
        reads = parse_instant(start) if start else at
        return cls(scale=scale, origin=at, start=reads, wall=wall)

    @property
    def is_wall_time(self) -> bool:
        return self.scale == 1.0 and self.origin == self.start

    def fleet_at(self, wall_ts: float) -> float:
        """The fleet time at wall time ``wall_ts``."""
        return self.start + (wall_ts - self.origin) * self.scale

    def wall_at(self, fleet_ts: float) -> float:
        """The wall time at which the fleet clock reads ``fleet_ts``."""
        return self.origin + (fleet_ts - self.start) / self.scale

    def now(self) -> float:
        """Fleet seconds since the epoch."""
        return self.start + (self.wall() - self.origin) * self.scale

    def now_utc(self) -> datetime:
        """Fleet time now as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), UTC)

    def real_seconds(self, fleet_seconds: float) -> float:
        """How many real seconds ``fleet_seconds`` of fleet time take (a counter's TTL for a
        frequency period, a pacing interval)."""
        return fleet_seconds / self.scale

    def variables(self) -> dict[str, str]:
        """The RTBFLEET_CLOCK_* variables that give another process this clock."""
        return {
            "RTBFLEET_CLOCK_SCALE": repr(self.scale),
            "RTBFLEET_CLOCK_ORIGIN": repr(self.origin),
            "RTBFLEET_CLOCK_START": repr(self.start),
        }


WALL = FleetClock()

__all__ = ["WALL", "FleetClock", "instant_check", "parse_instant", "scale_check"]
