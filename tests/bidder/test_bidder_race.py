"""The exponential race: the same law as the cumulative draw, and an early stop that answers
exactly as pricing every candidate, on the bench's request mix and on crafted worst cases."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

import numpy as np
import pytest
from bidder_world import make_world
from msgspec.structs import replace
from perf_pipeline import NOW, crowded_request, typical_request

from bidder.outcome import Answer
from bidder.race import RaceResult, exponentials, race, winner
from bidder.scoring import HashedLinearModel, PriorModel, cross_prefixes
from fleet import portfolio
from fleet.config import Campaign, ConfigSnapshot
from fleet.features import hash_one
from sim import portfolio as synthetic
from sim import vocabulary as vocab


def test_exponentials_are_reproducible_exp1_draws() -> None:
    e = exponentials(12345, 200_000)
    assert np.array_equal(e, exponentials(12345, 200_000))
    assert not np.array_equal(e[:100], exponentials(12346, 100))
    assert (e >= 0.0).all() and np.isfinite(e).all()
    assert abs(float(e.mean()) - 1.0) < 0.01 and abs(float(e.var()) - 1.0) < 0.02
    assert np.array_equal(exponentials(7, 50), exponentials(7, 80)[:50])  # j-th draw is j's own


def test_the_winner_follows_the_weights() -> None:
    weights = {0: 1.0, 1: 2.0, 2: 0.0, 3: 4.0, 4: 3.0}
    counts = np.zeros(5)
    for seed in range(40_000):
        k = winner(exponentials(seed, 5), weights, [0, 1, 2, 3, 4])
        assert k is not None
        counts[k] += 1
    share = counts / counts.sum()
    assert share[2] == 0.0
    assert np.allclose(share, [0.1, 0.2, 0.0, 0.4, 0.3], atol=0.01)
    # no positive weight: uniform over the survivors by their exponentials
    uniform = np.zeros(3)
    for seed in range(30_000):
        k = winner(exponentials(seed, 3), {0: 0.0, 1: 0.0, 2: 0.0}, [2, 0, 1])
        assert k is not None
        uniform[k] += 1
    assert np.allclose(uniform / uniform.sum(), 1 / 3, atol=0.01)
    assert winner(exponentials(1, 3), {}, []) is None


class _Book:
    """Candidates with fixed weights (None: dropped); counts what was priced and refined."""

    def __init__(self, weights: Sequence[float | None]) -> None:
        self.weights = list(weights)
        self.priced: list[int] = []

    def price(self, js: list[int]) -> list[float | None]:
        self.priced += js
        return [self.weights[j] for j in js]


def _both(
    weights: Sequence[float | None],
    bounds: Sequence[float],
    seed: int,
    refined: Sequence[float] | None = None,
    excluded: frozenset[int] = frozenset(),
    limit: int = 0,
) -> tuple[RaceResult, RaceResult, _Book]:
    b = np.asarray(bounds, dtype=np.float64)
    refine = None if refined is None else (lambda js: [refined[j] for j in js])
    full, early = _Book(weights), _Book(weights)
    kw = {"refine": refine, "excluded": excluded.__contains__, "limit": limit}
    a = race(seed, b, full.price, early=False, **kw)  # type: ignore[arg-type]
    z = race(seed, b, early.price, **kw)  # type: ignore[arg-type]
    assert len(set(early.priced)) == len(early.priced)  # nobody priced twice
    return a, z, early


def _cases() -> list[tuple[str, list[float | None], list[float], list[float] | None]]:
    rng = random.Random(2)
    n = 300
    cases: list[tuple[str, list[float | None], list[float], list[float] | None]] = []
    tied: list[float | None] = [5.0] * n
    cases.append(("all tied, exact bounds", tied, [5.0] * n, None))
    cases.append(("all tied, loose bounds", tied, [50.0] * n, [5.0] * n))
    huge: list[float | None] = [1.0] * n
    huge[137] = 1e9
    cases.append(("one huge weight", huge, [1e9 if j == 137 else 2.0 for j in range(n)], None))
    loose: list[float | None] = [rng.uniform(0.5, 2.0) for _ in range(n)]
    cases.append(("one loose bound", loose, [1e12 if j == 3 else 2.0 for j in range(n)], None))
    everyone_loose = [1e6] * n
    cases.append(("every bound loose", loose, everyone_loose, [2.0] * n))
    dropped: list[float | None] = [None if rng.random() < 0.7 else rng.random() for _ in range(n)]
    cases.append(("most dropped", dropped, [1.0] * n, None))
    zeros: list[float | None] = [0.0 if rng.random() < 0.5 else None for _ in range(n)]
    cases.append(("no positive weight", zeros, [rng.uniform(0.0, 3.0) for _ in range(n)], None))
    zero_bounds: list[float | None] = [0.0] * n
    cases.append(("zero bounds, zero weights", zero_bounds, [0.0] * n, None))
    mixed: list[float | None] = [rng.choice([None, 0.0, rng.expovariate(1.0)]) for _ in range(n)]
    cases.append(("mixed", mixed, [(w or 0.0) * rng.uniform(1, 3) for w in mixed], None))
    # bounds so small that some keys leave the floats (subnormal) or nearly do
    tiny_bounds = [rng.choice([1e-310, 1e-300, 2.0]) for _ in range(n)]
    tiny: list[float | None] = [b * rng.uniform(0.1, 1.0) for b in tiny_bounds]
    cases.append(("tiny bounds", tiny, tiny_bounds, None))
    return cases


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_the_early_stop_equals_pricing_everything(
    case: tuple[str, list[float | None], list[float], list[float] | None],
) -> None:
    name, weights, bounds, refined = case
    priced = []
    for seed in range(60):
        excluded = frozenset(range(0, len(weights), 7)) if seed % 3 == 0 else frozenset()
        full, early, book = _both(weights, bounds, seed, refined, excluded)
        assert early.winner == full.winner, (name, seed)
        assert not excluded & set(book.priced)
        priced.append(len(book.priced))
    if name in ("all tied, exact bounds", "one huge weight"):
        assert max(priced) <= 3  # exact bounds: the winner and little else
    if name == "one loose bound":  # the others' bounds within 4x of their weights
        assert max(priced) <= 12
    if name in ("all tied, loose bounds", "every bound loose"):
        assert np.mean(priced) < 0.2 * len(weights)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_the_compiled_loop_is_the_python_loop_call_for_call(
    case: tuple[str, list[float | None], list[float], list[float] | None],
) -> None:
    """``bidder._bounds.race_loop`` against its reference ``python_race_loop``: the same
    verdict, and the same refinements and pricing in the same order (a log of the calls)."""
    from bidder import _bounds
    from bidder.race import (
        RACE_CAPPED,
        RACE_EVERYTHING,
        RACE_WON,
        REFINE_BATCH,
        python_race_loop,
    )

    # the two loops speak the same verdicts
    assert (_bounds.RACE_WON, _bounds.RACE_CAPPED, _bounds.RACE_EVERYTHING) == (
        RACE_WON,
        RACE_CAPPED,
        RACE_EVERYTHING,
    )

    name, weights, bounds, refined = case
    b = np.asarray(bounds, dtype=np.float64)
    for seed in range(40):
        excluded = frozenset(range(0, len(weights), 7)) if seed % 3 == 0 else frozenset()
        logs: list[list[tuple[str, list[int]]]] = []
        verdicts = []
        for loop in (python_race_loop, _bounds.race_loop):
            log: list[tuple[str, list[int]]] = []

            def price(js: list[int], log: list[tuple[str, list[int]]] = log) -> list[float | None]:
                log.append(("price", list(js)))
                return [weights[j] for j in js]

            def refine(js: list[int], log: list[tuple[str, list[int]]] = log) -> list[float]:
                log.append(("refine", list(js)))
                assert refined is not None
                return [refined[j] for j in js]

            verdicts.append(
                loop(
                    seed,
                    b,
                    price,
                    refine if refined is not None else None,
                    excluded.__contains__ if excluded else None,
                    (seed % 5) * 3,  # sometimes a limit
                    REFINE_BATCH,
                )
            )
            logs.append(log)
        assert verdicts[0] == verdicts[1], (name, seed)
        assert logs[0] == logs[1], (name, seed)


def test_a_priced_weight_above_its_bound_falls_back_to_pricing_everything() -> None:
    rng = random.Random(9)
    weights: list[float | None] = [rng.uniform(3.0, 9.0) for _ in range(50)]  # P(win) > 1, say
    for seed in range(20):
        full, early, book = _both(weights, [2.0] * 50, seed)
        assert early.winner == full.winner and len(book.priced) == 50


def test_the_cap_stops_the_race_among_the_priced() -> None:
    weights: list[float | None] = [1.0] * 100
    _, early, book = _both(weights, [1e6] * 100, 5, limit=4)
    assert early.capped and early.priced == 4 and len(book.priced) == 4
    assert early.winner in book.priced


# -- the pipeline: early stop against pricing everything -------------------------------------------


def _snapshot(count: int, seed: int = 3, **edit: object) -> ConfigSnapshot:
    pf = portfolio.validate(synthetic.generate(count, seed=seed, creatives_per_campaign=5, now=NOW))
    campaigns = pf.campaigns
    if edit:
        campaigns = tuple(replace(c, **edit) for c in campaigns)  # type: ignore[arg-type]
    return ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=campaigns,
        version=1,
        fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
    )


def _model(scale: float = 0.3, boost: dict[str, float] | None = None) -> HashedLinearModel:
    rng = np.random.default_rng(4)
    w = rng.normal(0.0, scale, 1 << 14).astype(np.float32)
    model = HashedLinearModel(w, w[::-1].copy(), -4.5, -3.5, bits=14, version=1)
    for feature, value in (boost or {}).items():
        i = hash_one(feature, model.seed) & ((1 << model.bits) - 1)
        model.weights[0, i] = model.weights[1, i] = value
    return model


def _same(a: Answer, b: Answer) -> None:
    assert (a.outcome, a.reason, a.nbr, a.body, a.bids) == (
        b.outcome,
        b.reason,
        b.nbr,
        b.body,
        b.bids,
    )


def _compare(snapshot: ConfigSnapshot, model: object, bodies: list[bytes], **kw: object) -> int:
    """Both pipelines on the same requests; the gate calls the early stop saved."""
    full = make_world(snapshot, model=model, max_priced_per_imp=0, early_stop=False, **kw)
    early = make_world(snapshot, model=model, max_priced_per_imp=0, **kw)
    bids = 0
    for body in bodies:
        a = early.handle(body, wallclock=NOW.timestamp())
        _same(a, full.handle(body, wallclock=NOW.timestamp()))
        bids += a.outcome == "bid"
    assert early.pipeline._rng.getstate() == full.pipeline._rng.getstate()
    assert bids > 0
    assert len(early.gate.calls) < len(full.gate.calls)
    return len(full.gate.calls) - len(early.gate.calls)


def _mix(count: int) -> list[bytes]:
    rng = random.Random(7)
    bodies = []
    for i in range(count):
        req = typical_request(rng, i, rng.choice((1, 2, 2)))
        if i % 5 == 0:  # two imps: a campaign wins one of them at most
            req["imp"].append(dict(req["imp"][0], id="2", bidfloor=0.05))
        bodies.append(json.dumps(req).encode())
    return bodies + [json.dumps(crowded_request(at)).encode() for at in (1, 2)]


def test_the_bench_request_mix_answers_as_pricing_everything() -> None:
    _compare(_snapshot(200), _model(), _mix(150))


def test_without_a_position_scorer_too() -> None:
    _compare(_snapshot(200), PriorModel(), _mix(60))


def test_every_candidate_tied() -> None:
    # one goal, one price, one maximum bid, and a model of zeros: every value and bid equal
    tied = _snapshot(200, goal_type="CPC", goal_price_micros=500_000, max_bid_cpm_micros=8_000_000)
    _compare(tied, HashedLinearModel.zeros(14, version=1), _mix(60))


def test_one_huge_maximum_bid() -> None:
    snapshot = _snapshot(200)
    campaigns = list(snapshot.campaigns)
    campaigns[17] = replace(
        campaigns[17], max_bid_cpm_micros=10**12, goal_type="CPM", goal_price_micros=10**12
    )
    _compare(replace(snapshot, campaigns=tuple(campaigns)), _model(), _mix(60))


def test_a_campaign_whose_bound_is_loose() -> None:
    # one cross weight far above the others: the cross bound (slots x the largest weight) is
    # loose for every candidate, and one campaign's crosses really reach it
    snapshot = _snapshot(200)
    c: Campaign = snapshot.campaigns[5]
    prefix = cross_prefixes(c, c.creatives[0])[1]
    _compare(snapshot, _model(boost={prefix + "USA": 6.0}), _mix(60))


@pytest.mark.parametrize("n", [10, 300, 2000])
def test_keys_in_chunks_come_in_the_order_of_a_full_sort(n: int) -> None:
    """Ties (rounded keys), infinities and chunks of any size: the (key, j) order of a stable
    sort of all."""
    from bidder.race import _ascending

    rng = np.random.default_rng(n)
    keys = np.round(rng.exponential(1.0, n), 1)
    keys[rng.random(n) < 0.2] = np.inf
    finite = int(np.isfinite(keys).sum())
    got_j: list[int] = []
    got_k: list[float] = []
    for js, ks in _ascending(keys, finite):
        got_j += js
        got_k += ks
    order = np.argsort(keys, kind="stable")[:finite]
    assert got_j == order.tolist() and got_k == keys[order].tolist()


def test_compiled_exponentials_equal_the_reference() -> None:
    """Bit for bit, over enough draws that numpy's vector logarithm would differ from the C
    library's in some (a few in a thousand)."""
    from bidder import race as race_module

    assert race_module._race_exponentials is not None  # built by `make build`
    rng = random.Random(11)
    seeds = [0, 1, (1 << 64) - 1, (1 << 63) + 5, -3] + [rng.getrandbits(64) for _ in range(50)]
    for seed in seeds:
        for n in (0, 1, 24, 3000):
            got = race_module.exponentials(seed, n)
            want = race_module.python_exponentials(seed, n)
            assert got.dtype == want.dtype and np.array_equal(got, want), (seed, n)


def _edge_uniforms() -> np.ndarray:
    """u in (0, 1] where the floor's steps change: 2**-53 and 1, each side of the powers of
    two and of sqrt(1/2) times them, and random ones, as the draws make them (multiples of
    2**-53)."""
    grid = 1.0 / (1 << 53)
    points = [grid, 1.0, 1.0 - grid]
    for e in range(0, 53):
        for c in (2.0**-e, 0.7071067811865476 * 2.0**-e):
            k = round(c / grid)
            points += [(k + d) * grid for d in (-2, -1, 0, 1, 2) if 0 < k + d <= 1 << 53]
    rng = np.random.default_rng(4)
    drawn = (rng.integers(0, 1 << 53, 200_000, dtype=np.int64) + 1).astype(np.float64) * grid
    return np.concatenate([np.asarray(points), drawn])


def test_exponential_floors_are_lower_bounds_within_two_percent() -> None:
    """The race's first keys rest on F(u) <= -ln(u) as the C library computes it (the E_j the
    race takes): checked at the floor's edges and over random draws; and the floor is close,
    so the order it gives wastes little."""
    from bidder import _bounds
    from bidder.race import python_exponential_floors

    u = _edge_uniforms()
    floors = python_exponential_floors(u)
    exact = np.asarray([-math.log(x) for x in u.tolist()])
    assert (floors <= exact).all() and (floors >= 0.0).all()
    assert (exact - floors <= 0.0075 + 1e-9).all()
    small = exact < 0.01
    assert (exact[small] - floors[small] <= 3e-7 * exact[small] + 1e-12).all()
    assert np.array_equal(_bounds.exponential_floors(u), floors)  # the compiled twin
    with pytest.raises(ValueError):
        _bounds.exponential_floors(np.asarray([0.0]))


def test_compiled_first_keys_equal_the_reference() -> None:
    from bidder import _bounds
    from bidder.race import exponentials, python_first_keys

    rng = random.Random(12)
    for seed in [0, -1, (1 << 64) - 1] + [rng.getrandbits(64) for _ in range(30)]:
        n = rng.choice((0, 1, 7, 500))
        bounds = np.asarray(
            [rng.choice((0.0, -1.0, 1e-300, 3.0, rng.expovariate(1e-5))) for _ in range(n)]
        )
        got = _bounds.first_keys(seed, bounds)
        want = python_first_keys(seed, bounds)
        assert np.array_equal(got, want)
        exact = exponentials(seed, n)
        live = bounds > 0.0
        with np.errstate(over="ignore"):
            assert (got[live] <= exact[live] / bounds[live]).all()  # lower bounds of E_j / b_j
        assert np.isinf(got[~live]).all()
