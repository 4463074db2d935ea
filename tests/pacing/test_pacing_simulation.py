"""A small run of bench/pacing.py's simulation (4 bidders, 6 campaigns, one day): the aims,
loosely, for the pacer; and the naive baseline is worse where it should be."""

from __future__ import annotations

import statistics

from bench.pacing import SimConfig, simulate
from pacing.gate.controller import MultiplicativeThrottle

SMALL = SimConfig(
    bidders=4,
    campaigns=6,
    supply_limited=1,
    crash_bidder=1,
    min_impressions=1_500,
    max_impressions=4_000,
    seed=3,
)


def test_the_pacer_meets_the_aims_loosely_and_beats_the_naive_baseline() -> None:
    paced = simulate(SMALL, MultiplicativeThrottle(), "pacer")
    naive = simulate(SMALL, None, "naive")
    assert statistics.median(paced.overdelivery) <= 0.002
    assert max(paced.overdelivery) <= 0.02
    assert min(paced.utilisation) >= 0.95
    assert paced.hours_within >= 0.8
    assert paced.hourly_mape <= 0.15
    assert max(paced.cap_to_last_bid, default=0.0) <= 20.0
    # The baseline spends as fast as it can on recorded spend: it overshoots by what is in
    # flight, keeps bidding past the cap and ignores the plan.
    assert max(naive.overdelivery) > max(paced.overdelivery)
    assert max(naive.cap_to_last_bid) > 60.0
    assert naive.hourly_mape > 3 * paced.hourly_mape
