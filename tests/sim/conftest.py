from __future__ import annotations

import pytest

from sim.market import Market, MarketParams


@pytest.fixture(scope="session")
def market() -> Market:
    return Market(MarketParams(users=3000, placements=120), seed=7)
