"""The fleet clock: wall time by default, a compressed day when scaled, one mapping both ways."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.clock import WALL, FleetClock, instant_check, parse_instant
from fleet.errors import SettingsError
from fleet.settings import FleetSettings, load


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_default_settings_give_wall_time_exactly() -> None:
    clock = load(FleetSettings, {}, env_file=None).clock()
    assert clock.is_wall_time
    wall = Wall(1_780_000_123.456)
    same = FleetClock(clock.scale, clock.origin, clock.start, wall=wall)
    assert same.now() == wall.t
    assert WALL.is_wall_time


def test_a_scaled_clock_runs_a_day_in_150_seconds() -> None:
    midnight = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    wall = Wall(1_000.0)
    clock = FleetClock(scale=576.0, origin=1_000.0, start=midnight, wall=wall)
    assert clock.now() == midnight
    wall.t += 75.0
    assert clock.now_utc() == datetime(2026, 6, 1, 12, tzinfo=UTC)
    wall.t += 75.0
    assert clock.now_utc() == datetime(2026, 6, 2, tzinfo=UTC)
    assert clock.real_seconds(86_400) == 150.0


def test_wall_at_inverts_fleet_at() -> None:
    clock = FleetClock(scale=60.0, origin=500.0, start=10_000.0)
    for fleet_ts in (10_000.0, 10_060.0, 9_000.0, 123_456.5):
        assert clock.fleet_at(clock.wall_at(fleet_ts)) == pytest.approx(fleet_ts)
    assert clock.wall_at(10_060.0) == 501.0


def test_settings_build_the_clock_and_another_process_gets_the_same_one() -> None:
    env = {
        "RTBFLEET_CLOCK_SCALE": "576",
        "RTBFLEET_CLOCK_ORIGIN": "2026-12-07T12:00:00+00:00",
        "RTBFLEET_CLOCK_START": "2026-12-07T00:00:00Z",
    }
    clock = load(FleetSettings, env, env_file=None).clock()
    assert clock.scale == 576.0
    assert clock.origin == datetime(2026, 12, 7, 12, tzinfo=UTC).timestamp()
    assert clock.start == datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    again = load(FleetSettings, clock.variables(), env_file=None).clock()
    assert (again.scale, again.origin, again.start) == (clock.scale, clock.origin, clock.start)


def test_an_origin_alone_means_fleet_time_equals_wall_time_there() -> None:
    clock = FleetClock.from_settings(10.0, "1000", "")
    assert (clock.origin, clock.start) == (1000.0, 1000.0)
    assert clock.fleet_at(1001.0) == 1010.0


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("RTBFLEET_CLOCK_SCALE", "0", "greater than 0"),
        ("RTBFLEET_CLOCK_SCALE", "-2", "greater than 0"),
        ("RTBFLEET_CLOCK_SCALE", "fast", "not a valid float"),
        ("RTBFLEET_CLOCK_ORIGIN", "2026-12-07T00:00:00", "UTC offset"),
        ("RTBFLEET_CLOCK_START", "yesterday", "ISO 8601"),
        ("RTBFLEET_CLOCK_START", "nan", "finite"),
    ],
)
def test_bad_clock_settings_name_the_variable(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(FleetSettings, {variable: value}, env_file=None)
    assert caught.value.variable == variable
    assert reason in str(caught.value)


def test_instants_parse_from_iso_or_unix_seconds() -> None:
    assert parse_instant("0") == 0.0
    assert parse_instant(" 1780000000.5 ") == 1_780_000_000.5
    assert parse_instant("1970-01-01T01:00:00+01:00") == 0.0
    assert instant_check("") is None
    assert instant_check("2026-01-01") is not None  # a date without time or offset


def test_a_clock_refuses_a_bad_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        FleetClock(scale=0.0)
