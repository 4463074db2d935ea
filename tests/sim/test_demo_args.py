from __future__ import annotations

import argparse

import pytest

from sim import demo
from sim.errors import SimConfigError
from sim.exchange import Progress
from sim.report import CampaignPlan
from sim.settings import SimSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_options_override_the_environment() -> None:
    env = {"RTBFLEET_SIM_RATE": "250", "RTBFLEET_SIM_SEED": "9"}
    s = demo.sim_settings(parse("--duration", "5", "--time-scale", "60"), env)
    assert (s.duration, s.time_scale, s.rate, s.seed) == (5.0, 60.0, 250.0, 9)
    assert demo.sim_settings(parse("--rate", "10"), env).rate == 10.0
    with pytest.raises(SimConfigError, match="--rate"):
        demo.sim_settings(parse("--rate", "0"), env)


def test_progress_line() -> None:
    p = Progress(
        elapsed=10.0,
        sim_ts=1000.0 + 5760.0,
        requests=4000,
        answered=3990,
        bids=2000,
        wins=500,
        late=0,
        timeouts=1,
        not_sent=0,
        spend_usd_micros=12_340_000,
        p50_ms=1.5,
        p99_ms=9.0,
        rate=401.0,
    )
    plans = [CampaignPlan(1, "a", "CPC", 1, 864_000_000, "USD")]
    line = demo.progress_line(p, SimSettings(), plans, 1000.0)
    assert "sim +01:36" in line and "401 req/s" in line and "bid 50.1 %" in line
    assert "win 25.0 %" in line and "spend 12.34 / plan 57.60 USD" in line


def test_the_fleet_clock_reads_the_simulated_start_when_the_traffic_is_due() -> None:
    settings = SimSettings(time_scale=576.0, clock_lead=10.0, sim_start="2026-06-01T00:00:00Z")
    now = [1_000_000.0]
    plan = demo.FleetClockPlan(settings, wall=lambda: now[0])
    assert plan.clock is None  # made only when the launcher asks, just before the services
    variables = plan()
    clock = plan.clock
    assert clock is not None
    assert variables["RTBFLEET_CLOCK_SCALE"] == "576.0"
    midnight = 1_780_272_000.0  # 2026-06-01T00:00:00Z
    assert clock.wall_at(midnight) == now[0] + 10.0
    assert clock.fleet_at(now[0] + 10.0 + 75.0) == midnight + 12 * 3600
