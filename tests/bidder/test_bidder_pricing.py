from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidder.pricing import (
    LogNormalMarket,
    Priced,
    Shader,
    convert_micros,
    floor_micros,
    optimal_tau,
    price,
    shade,
)

FX = {"USD": 1_000_000, "EUR": 920_000, "JPY": 150_000_000}
MU, SIGMA = math.log(1_500_000), 0.6


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def gain(value: int, bid: int, mu: float = MU, sigma: float = SIGMA) -> float:
    return (value - bid) * _cdf((math.log(bid) - mu) / sigma)


def test_floors_are_converted_and_rounded_up() -> None:
    assert floor_micros(0.5, "USD", "USD", FX) == 500_000
    assert floor_micros(0.29, "USD", "USD", FX) == 290_000
    assert floor_micros(0.1234567, "USD", "USD", FX) == 123_457
    assert floor_micros(1.5, "EUR", "USD", FX) == 1_630_435  # 1.5 / 0.92, rounded up
    assert floor_micros(150.0, "jpy", "USD", FX) == 1_000_000
    assert floor_micros(1.0, "XYZ", "USD", FX) is None
    assert floor_micros(1.0, "XYZ", "XYZ", {}) == 1_000_000
    assert floor_micros(0.0, "EUR", "USD", FX) == 0
    assert convert_micros(1_630_435, "USD", "EUR", FX, round_up=False) == 1_500_000
    # past any bid, however large: still an integer (not an overflow from inf)
    assert floor_micros(1e305, "USD", "USD", FX) == floor_micros(1e12, "USD", "USD", FX)


def test_exact_shading_matches_a_brute_force_search() -> None:
    for value in (200_000, 1_000_000, 1_500_000, 4_000_000, 30_000_000):
        bid = shade(value, 0, MU, SIGMA)
        assert bid is not None and 1 <= bid < value
        grid = range(1, value, max(1, value // 20_000))
        best = max(grid, key=lambda b: gain(value, b))
        assert gain(value, bid) >= gain(value, best) * (1 - 1e-6)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(10_000, 50_000_000),
    st.integers(10_000, 50_000_000),
    st.integers(0, 20_000_000),
    st.floats(0.05, 3.0),
)
def test_shaded_bids_rise_with_value_and_stay_below_it(
    v1: int, v2: int, floor: int, sigma: float
) -> None:
    lo, hi = sorted((v1, v2))
    shader = Shader()

    def exact(v: int) -> int | None:
        return shade(v, floor, MU, sigma)

    def fast(v: int) -> int | None:
        return shader.bid(v, floor, MU, sigma)

    for solve in (exact, fast):
        b_lo, b_hi = solve(lo), solve(hi)
        for value, bid in ((lo, b_lo), (hi, b_hi)):
            if value <= max(floor, 1):
                assert bid is None
            else:
                assert bid is not None and max(floor, 1) <= bid < value
        if b_lo is not None and b_hi is not None:
            assert b_hi >= b_lo - 1  # rounding to whole micros may differ by one


def test_interpolated_shading_loses_almost_nothing() -> None:
    shader = Shader()
    rng = random.Random(5)
    for _ in range(300):
        sigma = rng.uniform(0.1, 2.0)
        value = int(math.exp(MU + rng.uniform(-3, 3)))
        exact = shade(value, 0, MU, Shader.quantize(sigma))
        fast = shader.bid(value, 0, MU, sigma)
        assert exact is not None and fast is not None
        q = Shader.quantize(sigma)
        assert gain(value, fast, sigma=q) >= gain(value, exact, sigma=q) * 0.999


def test_optimal_tau_is_below_x_and_increasing() -> None:
    for sigma in (0.05, 0.5, 2.0):
        taus = [optimal_tau(x / 4, sigma) for x in range(-200, 400)]
        assert all(t < x / 4 for t, x in zip(taus, range(-200, 400), strict=True))
        assert all(b > a for a, b in itertools.pairwise(taus))


def test_market_model_learns_the_clearing_price() -> None:
    rng = random.Random(1)
    market = LogNormalMarket(prior_median_micros=5_000_000, prior_sigma=1.5)
    true_mu, true_sigma = math.log(800_000), 0.4
    for _ in range(3000):
        market.observe_win("seg", int(math.exp(rng.gauss(true_mu, true_sigma))))
    mu, sigma = market.params("seg")
    assert abs(mu - true_mu) < 0.1 and abs(sigma - true_sigma) < 0.1
    assert market.p_win("seg", 800_000) == pytest.approx(0.5, abs=0.08)
    # an unseen segment is shrunk all the way to the global estimate
    assert market.params("other") == pytest.approx(market.params("*"))


def test_censored_observations_move_the_estimate_the_right_way() -> None:
    rng = random.Random(2)
    true_mu, true_sigma = math.log(2_000_000), 0.5
    market = LogNormalMarket(prior_median_micros=500_000, prior_sigma=1.0)
    for _ in range(4000):  # second price: we see the price on a win, only "higher" on a loss
        clearing = math.exp(rng.gauss(true_mu, true_sigma))
        bid = int(math.exp(rng.gauss(math.log(1_500_000), 0.6)))
        if bid >= clearing:
            market.observe_win("s", int(clearing))
        else:
            market.observe_loss("s", bid)
    mu, _sigma = market.params("s")
    assert abs(mu - true_mu) < 0.15, math.exp(mu)
    # first price: wins tell only "below our bid"
    low = LogNormalMarket(prior_median_micros=5_000_000)
    for _ in range(200):
        low.observe_win("s", 1_000_000, exact=False)
    assert low.params("s")[0] < math.log(1_000_000)
    high = LogNormalMarket(prior_median_micros=100_000)
    for _ in range(200):
        high.observe_loss("s", 1_000_000)
    assert high.params("s")[0] > math.log(1_000_000)


def test_p_win_rises_with_the_bid() -> None:
    market = LogNormalMarket()
    ps = [market.p_win("s", b) for b in (0, 1, 10_000, 500_000, 1_000_000, 5_000_000, 10**9)]
    assert ps[0] == 0.0 and all(b >= a for a, b in itertools.pairwise(ps)) and ps[-1] > 0.99


def _price(**kw: object) -> Priced | str:
    args: dict[str, object] = dict(
        value=2_000_000,
        floor=100_000,
        max_bid=5_000_000,
        auction_type=2,
        margin=0.2,
        min_bid=10_000,
        market=LogNormalMarket(),
        segment="s",
        params=(MU, SIGMA),
        shader=None,
    )
    args.update(kw)
    return price(**args)  # type: ignore[arg-type]


def test_price_rules() -> None:
    second = _price()
    assert isinstance(second, Priced) and second.price == 1_600_000 and 0 < second.p_win < 1
    assert _price(max_bid=1_000_000) == Priced(1_000_000, _price(max_bid=1_000_000).p_win)  # type: ignore[union-attr]
    assert _price(floor=1_700_000) == "floor"  # value x (1 - margin) under the floor
    assert _price(max_bid=90_000) == "floor"
    assert _price(value=0) == "low_value"
    assert _price(value=10_000, floor=0) == "low_value"  # 8_000 < min bid
    first = _price(auction_type=1)
    assert isinstance(first, Priced) and 100_000 <= first.price < 2_000_000
    assert _price(auction_type=1, floor=2_000_000) == "floor"
    fixed = _price(auction_type=3, floor=1_234_000)
    assert isinstance(fixed, Priced) and fixed.price == 1_234_000
    assert _price(auction_type=3, floor=2_500_000) == "floor"
    grid = _price(auction_type=1, params=None)  # a market known only through p_win
    assert isinstance(grid, Priced) and 100_000 <= grid.price < 2_000_000


def test_shader_remembering_the_last_sigma_changes_no_bid() -> None:
    shader = Shader(max_tables=2)
    rng = random.Random(9)
    sigmas = [0.3, 0.3, 0.31, 0.3, 1.2, 1.2, 0.01, 0.05, 0.3004, 0.7]
    for _ in range(200):
        sigma = rng.choice(sigmas)
        value, floor = rng.randrange(1, 5_000_000), rng.randrange(0, 1_000_000)
        assert shader.bid(value, floor, MU, sigma) == Shader().bid(value, floor, MU, sigma)
