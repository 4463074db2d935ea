"""Helpers shared by the simulator's tests (imported as ``sim_helpers``)."""

from __future__ import annotations

import random

from sim.market import Market
from sim.traffic import Traffic

START = 1_780_000_000.0  # any simulated epoch second works


def make_traffic(market: Market, seed: int = 1) -> Traffic:
    return Traffic(
        market, random.Random(seed), gzip_share=0.2, ortb25_share=0.25, default_tmax_ms=100
    )
