"""The load shedder: sojourn-time shedding, with times passed in (no clock, no loop), and a
discrete-event model of the event loop to show what it does under twice the load it can take."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

import pytest

from bidder.shedding import SHED_IN_FLIGHT, SHED_LAG, LagProbe, LoadShedder, SheddingPolicy

POLICY = SheddingPolicy(max_wait=0.010, max_in_flight=100, probe_interval=0.002)


def test_nothing_is_shed_on_a_loop_that_keeps_up() -> None:
    shedder = LoadShedder(POLICY)
    assert shedder.admit(1, 100.0) is None  # no probe yet: nothing known, nothing shed
    shedder.expect_probe(100.002, now=100.0)
    shedder.observe_lag(0.0001)
    for i in range(20):
        assert shedder.admit(1, 100.0 + i * 0.0001) is None
    assert shedder.share == 0.0


def test_a_request_that_waited_through_a_long_iteration_is_shed() -> None:
    shedder = LoadShedder(POLICY)
    shedder.expect_probe(100.002, now=100.0)
    # 25 ms into an iteration that has not let the probe run: those requests waited that long
    assert shedder.admit(1, 100.025) == SHED_LAG
    # the probe runs at the start of the next iteration, 23 ms late: what is read now became
    # ready during the last iteration, ~12.5 ms ago on average
    shedder.observe_lag(0.023)
    shedder.expect_probe(100.027, now=100.025)
    assert shedder.expected_wait(100.025) == pytest.approx(0.0125)
    assert shedder.admit(1, 100.025) == SHED_LAG
    # after a short iteration, the wait is short again
    shedder.observe_lag(0.0)
    shedder.expect_probe(100.029, now=100.027)
    assert shedder.admit(1, 100.0275) is None
    assert 0 < shedder.share < 1


def test_the_threshold_rises_while_shedding_leaves_the_loop_idle_and_comes_back() -> None:
    shedder = LoadShedder(POLICY)
    shedder.expect_probe(100.002, now=100.0)
    for i in range(200):  # a run of long waits: everything is shed
        shedder.admit(1, 100.030 + i * 1e-5)
    assert shedder.share > 0.1
    for _ in range(1000):  # two seconds of a loop busy half the time: too eager
        shedder.observe_lag(0.0, cpu=0.001)
    assert shedder.threshold == pytest.approx(POLICY.max_wait_ceiling)
    for _ in range(3000):  # six seconds fully busy: back to the configured wait
        shedder.observe_lag(0.0, cpu=0.002)
    assert shedder.threshold == pytest.approx(POLICY.max_wait, rel=0.01)
    assert shedder.busy > 0.95


def test_too_many_in_flight_sheds_at_once() -> None:
    shedder = LoadShedder(POLICY)
    assert shedder.admit(99, 0.0) is None
    assert shedder.admit(100, 0.0) == SHED_IN_FLIGHT


def test_disabled_never_sheds_but_still_tracks_lag() -> None:
    shedder = LoadShedder(SheddingPolicy(enabled=False, max_in_flight=1))
    shedder.expect_probe(1.002, now=1.0)
    shedder.observe_lag(1.0)
    assert shedder.lag == 1.0
    assert shedder.admit(10_000, 5.0) is None


def test_staleness_is_the_safe_bound_for_deadlines() -> None:
    shedder = LoadShedder(POLICY)
    assert shedder.staleness(100.0) == 0.0  # no probe yet
    shedder.expect_probe(100.002, now=100.0)
    assert shedder.staleness(100.001) == pytest.approx(0.003)  # idle: two intervals at most
    assert shedder.staleness(100.120) == pytest.approx(0.122)  # a stall, probe not run yet
    shedder.observe_lag(0.118)  # it runs at last, 118 ms late
    shedder.expect_probe(100.122, now=100.120)
    assert shedder.staleness(100.1205) == pytest.approx(0.1205)  # the whole stall
    assert shedder.expected_wait(100.1205) < shedder.staleness(100.1205)
    shedder.observe_lag(0.0)  # the next probe on time: the stall is over
    shedder.expect_probe(100.124, now=100.122)
    assert shedder.staleness(100.1225) == pytest.approx(0.0025)


def simulate(
    offered: float, cost: float, shed_cost: float, seconds: float, seed: int, cpu: bool = True
) -> dict[str, float]:
    """A single-threaded event loop under Poisson arrivals. Each iteration runs the due probe
    first (timers), then every request that arrived before the iteration began (poll), each
    served (``cost`` s) or shed (``shed_cost`` s) as the shedder decides; with ``cpu`` the probe
    also reports the loop's busy time, so that the threshold calibrates itself."""
    rng = random.Random(seed)
    shedder = LoadShedder(POLICY)
    busy = 0.0
    interval = POLICY.probe_interval
    arrivals: deque[float] = deque()
    t, next_arrival, next_probe = 0.0, 0.0, 0.0
    served = shed = 0
    waits: list[float] = []
    max_late_bound = 0.0  # how far the real wait ever exceeded the deadline bound
    while t < seconds:
        while next_arrival <= t:
            arrivals.append(next_arrival)
            next_arrival += rng.expovariate(offered)
        if t >= next_probe:
            shedder.observe_lag(t - next_probe, busy if cpu else None)
            busy = 0.0
            next_probe = t + interval
            shedder.expect_probe(next_probe, now=t)
        batch = list(arrivals)
        arrivals.clear()
        for arrived in batch:
            max_late_bound = max(max_late_bound, (t - arrived) - shedder.staleness(t))
            if shedder.admit(1, t) is None:
                if t > 1.0:  # after a warm-up second
                    served += 1
                    waits.append(t - arrived)
                t += cost
                busy += cost
            else:
                shed += t > 1.0
                t += shed_cost
                busy += shed_cost
        if not batch:  # idle: sleep until the next timer or arrival
            t = max(t, min(next_arrival, next_probe))
    waits.sort()
    return {
        "goodput": served / (seconds - 1.0),
        "shed": shed / (served + shed),
        "p99_wait": waits[int(0.99 * len(waits))],
        "max_late_bound": max_late_bound,
        "threshold": shedder.threshold,
    }


@pytest.mark.parametrize("cpu", [True, False])
@pytest.mark.parametrize("shed_cost_share", [0.05, 0.1])
def test_under_twice_the_capacity_the_server_keeps_bidding(
    shed_cost_share: float, cpu: bool
) -> None:
    """Twice the load the server can take: it must spend nearly all its time on real bids
    (goodput close to what is left after shedding the rest), keep waits short, and its
    deadline bound must never underestimate a real wait."""
    cost = 1 / 2000  # 2,000 bids/s at most
    shed_cost = cost * shed_cost_share
    offered = 4000.0
    result = simulate(offered, cost, shed_cost, seconds=6.0, seed=7, cpu=cpu)
    best = (1 - offered * shed_cost) / (cost - shed_cost)  # all time used, no idling
    assert result["goodput"] >= 0.85 * best
    assert result["goodput"] >= 0.8 * 2000
    assert result["p99_wait"] < 2 * POLICY.max_wait_ceiling
    assert POLICY.max_wait <= result["threshold"] <= POLICY.max_wait_ceiling
    assert result["max_late_bound"] <= 1e-9


def test_below_capacity_nothing_is_shed() -> None:
    result = simulate(offered=1200.0, cost=1 / 2000, shed_cost=1 / 40000, seconds=4.0, seed=3)
    assert result["shed"] < 0.01
    assert result["goodput"] == pytest.approx(1200, rel=0.05)


async def test_lag_probe_reports_a_blocked_loop() -> None:
    seen: list[float] = []
    due: list[tuple[float, float]] = []
    probe = LagProbe(
        0.005, lambda lag, cpu: seen.append(lag), expect=lambda at, now: due.append((at, now))
    )
    probe.start()
    await asyncio.sleep(0.03)
    time.sleep(0.05)  # noqa: ASYNC251 - block the loop: the next probe fires ~50 ms late
    await asyncio.sleep(0.03)
    await probe.stop()
    assert seen, "the probe never fired"
    assert max(seen) >= 0.03
    assert min(seen) < 0.02
    assert all(at > now for at, now in due)
    count = len(seen)
    await asyncio.sleep(0.02)
    assert len(seen) == count  # stopped means stopped
