"""The censored log-normal market model recovers a known competing-price distribution from
what a bidder sees of it: exact second-price clearing prices, first-price wins (below our
bid), losses (above our bid, or the winning price when the exchange sends it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learner.errors import BadParameters
from learner.market import CensoredLogNormalMarket, MarketSettings, truncated_moments

MU, SIGMA = math.log(2_000_000), 0.6


def auctions(
    market: CensoredLogNormalMarket,
    segment: str,
    n: int,
    *,
    first_price: bool,
    share_sent: float,
    seed: int,
) -> tuple[list[float], float]:
    """Feed n auctions of a market with competing price ~ LogNormal(MU, SIGMA); returns the
    log prices of the wins a naive fit would see, and the win rate."""
    rng = np.random.default_rng(seed)
    prices = np.exp(rng.normal(MU, SIGMA, n))
    bids = np.exp(rng.normal(MU - 0.3, 0.5, n))  # we bid a little under the market
    seen: list[float] = []
    wins = 0
    for m, b in zip(prices.astype(np.int64), bids.astype(np.int64), strict=True):
        if b > m:
            wins += 1
            if first_price:
                market.observe_win(segment, int(b), exact=False)
                seen.append(math.log(b))
            else:
                market.observe_win(segment, int(m), exact=True)
                seen.append(math.log(m))
        elif rng.random() < share_sent:
            market.observe_exact(segment, int(m))
        else:
            market.observe_loss(segment, int(b))
    return seen, wins / n


def test_recovers_a_known_log_normal_second_price() -> None:
    market = CensoredLogNormalMarket(MarketSettings(shrink=1.0, prior_weight=1.0))
    seen, rate = auctions(
        market, "2|ex|US|320x50", 20_000, first_price=False, share_sent=0.2, seed=1
    )
    assert 0.2 < rate < 0.5
    table = market.fit()
    mu, sigma = table.params("2|ex|US|320x50")
    assert mu == pytest.approx(MU, abs=0.03)
    assert sigma == pytest.approx(SIGMA, abs=0.03)
    # what a fit to wins alone gives is far off: the test can tell the two apart
    assert abs(float(np.mean(seen)) - MU) > 0.3


def test_recovers_from_first_price_wins_and_losses_only() -> None:
    market = CensoredLogNormalMarket(MarketSettings(shrink=1.0, prior_weight=1.0))
    auctions(market, "1|ex|DE|video", 30_000, first_price=True, share_sent=0.0, seed=2)
    mu, sigma = market.fit().params("1|ex|DE|video")
    assert mu == pytest.approx(MU, abs=0.05)
    assert sigma == pytest.approx(SIGMA, abs=0.05)
    p = market.p_win("1|ex|DE|video", int(math.exp(MU)))
    assert p == pytest.approx(0.5, abs=0.03)


def test_small_segments_shrink_towards_the_overall_fit() -> None:
    market = CensoredLogNormalMarket(MarketSettings(shrink=20.0))
    auctions(market, "big", 20_000, first_price=False, share_sent=0.2, seed=3)
    market.observe_exact("small", int(math.exp(MU + 2.0)))  # one very expensive observation
    table = market.fit()
    small_mu, _ = table.params("small")
    assert MU < small_mu < MU + 0.2  # one observation against 20 pseudo-observations
    assert table.params("never seen") == (table.overall.mu, table.overall.sigma)
    assert table.segments["big"].weight == pytest.approx(20_000)


def test_decay_fades_old_evidence() -> None:
    market = CensoredLogNormalMarket(MarketSettings(shrink=1.0, prior_weight=1.0))
    for _ in range(1000):
        market.observe_exact("s", 1_000_000)
    market.decay(0.001)
    for _ in range(1000):
        market.observe_exact("s", 4_000_000)
    mu, _ = market.fit().params("s")
    assert mu == pytest.approx(math.log(4_000_000), abs=0.01)
    market.decay(1e-12)
    assert market.segments == {}
    with pytest.raises(BadParameters):
        market.decay(0.0)


def test_segments_are_bounded() -> None:
    market = CensoredLogNormalMarket(MarketSettings(max_segments=10))
    for _ in range(5):
        market.observe_loss("heavy", 1_000_000)
    for i in range(50):
        market.observe_loss(f"s{i}", 1_000_000)
        assert len(market.segments) <= 10
    assert "heavy" in market.segments  # the lightest go first
    assert market.dropped_segments == 41


def test_ignores_nonsense() -> None:
    market = CensoredLogNormalMarket()
    market.observe_win("s", 0)
    market.observe_loss("s", -5)
    market.observe_exact("s", 100, weight=float("nan"))
    assert market.segments == {}


def test_truncated_moments_match_sampling() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, 2_000_000)
    for c, above in ((2.0, True), (-3.0, False), (40.0, False), (-40.0, True)):
        kept = x[x > c] if above else x[x < c]
        m1, m2 = truncated_moments(1.0, 2.0, c, above=above)
        if kept.size > 1000:
            assert m1 == pytest.approx(kept.mean(), abs=0.01)
            assert m2 == pytest.approx((kept * kept).mean(), rel=0.01)
        assert math.isfinite(m1) and math.isfinite(m2)
    # far in the tail the truncated mean sits just beyond the cut
    assert truncated_moments(0.0, 1.0, 30.0, above=True)[0] == pytest.approx(30.0, abs=0.05)
