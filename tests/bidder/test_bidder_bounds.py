"""The compiled loops over all candidates of an imp (bidder/_bounds.pyx) against their
references: the floors and weight bounds (``bidder.bounds``), the same by the runs of an imp
shape, the race's order of the keys (``bidder.race``) and the selection of a shape's runs
(``bidder.candidates``). Equal means the same numbers, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bidder import _bounds
from bidder.bounds import (
    EXP60_LOW,
    EXP_SHRINK,
    BoundTerms,
    ShapeTops,
    Survivors,
    entry_bounds,
    python_exp_factors,
    python_imp_bounds,
    python_rate_bounds,
    python_request_factors,
)
from bidder.candidates import ShapeRuns, little_words, python_select_runs, run_words
from bidder.memo import BigKey
from bidder.race import _ascending

POSITIONS = 500


def _case(
    seed: int, logistic: bool, deals: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, BoundTerms, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(0, 120))
    counts = rng.integers(1, 6, m)
    starts = np.zeros(m + 1, dtype=np.intp)
    np.cumsum(counts, out=starts[1:])
    flat = rng.integers(0, POSITIONS, int(starts[-1])).astype(np.intp)
    max_bids = rng.integers(0, 3_000_000, m).astype(np.int64)
    floors = rng.integers(0, 2_000_000, m).astype(np.int64)
    if deals:
        floors[rng.random(m) < 0.2] = -1  # a deal's floor in an unknown currency
    if logistic:
        table = rng.normal(-1.0, 2.0, (POSITIONS, 2))
        table[rng.random(POSITIONS) < 0.05] = 80.0  # past the sigmoid's clamp
        terms = BoundTerms(table, True, -4.2 + 1.5, -3.1 + 1.4)
    else:
        table = rng.uniform(0.0, 0.2, (POSITIONS, 2))
        table[rng.random(POSITIONS) < 0.05] = 1.0  # a rate of 1: the value's cap
        terms = BoundTerms(table, False)
    codes = rng.integers(0, 3, POSITIONS).astype(np.int8)
    prices = rng.integers(0, 10**9, POSITIONS).astype(np.int64)
    prices[rng.random(POSITIONS) < 0.1] = 10**15  # the largest goal price indexed
    return flat, starts, max_bids, floors, terms, codes, prices


def _same(a: Survivors, b: Survivors) -> None:
    assert a.below == b.below
    assert a.kept.dtype == b.kept.dtype and np.array_equal(a.kept, b.kept)
    assert a.lows.dtype == b.lows.dtype and np.array_equal(a.lows, b.lows)
    assert a.bounds.dtype == b.bounds.dtype and np.array_equal(a.bounds, b.bounds)


@pytest.mark.parametrize("logistic", [True, False])
@pytest.mark.parametrize("deals", [True, False])
def test_compiled_bounds_equal_the_reference(logistic: bool, deals: bool) -> None:
    for seed in range(40):
        flat, starts, max_bids, floors, terms, codes, prices = _case(seed, logistic, deals)
        for low_min in (1, 150_000):
            want = python_imp_bounds(flat, starts, max_bids, floors, terms, codes, prices, low_min)
            got = Survivors(
                *_bounds.imp_bounds(flat, starts, max_bids, floors, *terms, codes, prices, low_min)
            )
            _same(got, want)
            assert (want.bounds >= 0).all() and (want.lows >= low_min).all()
            assert want.below == int(((floors >= 0) & (max_bids < floors)).sum())


@pytest.mark.parametrize("logistic", [True, False])
def test_bounds_by_the_runs_of_a_shape_equal_those_by_positions(logistic: bool) -> None:
    """A shape's runs (positions in increasing order, grouped by entry) and a selection of
    them: the bounds from the shape's remembered tops equal those over each run's
    positions."""
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        _, _, _, _, terms, codes, prices = _case(seed, logistic, False)
        positions = np.sort(rng.choice(POSITIONS, int(rng.integers(1, 300)), replace=False))
        owners = np.cumsum(rng.random(len(positions)) < 0.4).astype(np.intp)
        firsts = np.flatnonzero(owners[1:] != owners[:-1]) + 1
        starts = np.concatenate([[0], firsts, [len(positions)]]).astype(np.intp)
        entries = owners[starts[:-1]]
        words = run_words(entries, int(entries[-1]) + 1)
        runs = ShapeRuns(positions.astype(np.intp), starts, entries, {}, *words)
        rows = np.flatnonzero(rng.random(len(starts) - 1) < 0.6).astype(np.intp)
        max_bids = rng.integers(0, 3_000_000, len(rows)).astype(np.int64)
        floors = rng.integers(0, 2_000_000, len(rows)).astype(np.int64)
        shapes = ShapeTops()
        tops = shapes.get(BigKey(7), runs, terms, codes, prices)
        assert shapes.get(BigKey(7), runs, terms, codes, prices) is tops  # remembered
        flat = np.concatenate(
            [runs.positions[starts[r] : starts[r + 1]] for r in rows] or [np.zeros(0, np.intp)]
        ).astype(np.intp)
        counts = starts[rows + 1] - starts[rows]
        groups = np.zeros(len(rows) + 1, dtype=np.intp)
        np.cumsum(counts, out=groups[1:])
        want = python_imp_bounds(flat, groups, max_bids, floors, terms, codes, prices, 1)
        _same(entry_bounds(rows, max_bids, floors, terms, tops, 1), want)
        # one floor for every candidate (an imp without deals), as one value
        one = floors[:1] if len(rows) else np.asarray([5], dtype=np.int64)
        everyone = np.full(len(rows), one[0], dtype=np.int64)
        want = python_imp_bounds(flat, groups, max_bids, everyone, terms, codes, prices, 1)
        _same(entry_bounds(rows, max_bids, one, terms, tops, 1), want)
        with pytest.raises(ValueError):
            entry_bounds(rows, max_bids, np.zeros(len(rows) + 2, np.int64), terms, tops, 1)
        if len(rows):  # the loop reads the request's factor by goal code: 0 to 2 only
            bad = tops._replace(goal_codes=np.full_like(tops.goal_codes, 3))
            with pytest.raises(ValueError, match="goal code"):
                entry_bounds(rows, max_bids, np.zeros(1, np.int64), terms, bad, 1)


def test_shape_tops_evict_the_least_recently_used() -> None:
    entries = np.zeros(1, np.intp)
    words = run_words(entries, 1)
    runs = ShapeRuns(np.arange(3, dtype=np.intp), np.asarray([0, 3]), entries, {}, *words)
    terms = BoundTerms(np.ones((3, 2)), False)
    codes, prices = np.zeros(3, np.int8), np.ones(3, np.int64)
    shapes = ShapeTops()
    first = shapes.get(BigKey(0), runs, terms, codes, prices)
    for shape in range(1, 40):
        shapes.get(BigKey(1 << (shape * 1000)), runs, terms, codes, prices)
        assert shapes.get(BigKey(0), runs, terms, codes, prices) is first  # in use: kept
    assert len(shapes._memo) == 16


def _sums(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sums of every size the bounds may meet: typical ones, some near the sigmoid's clamp at
    +-60, some past the exponential's range, and zeros."""
    sums = rng.normal(-2.0, 3.0, n)
    picks = rng.random(n)
    near = picks < 0.1
    sums[near] = rng.uniform(55.0, 65.0, int(near.sum())) * rng.choice([-1.0, 1.0], int(near.sum()))
    far = (picks >= 0.1) & (picks < 0.15)
    sums[far] = rng.uniform(-800.0, 800.0, int(far.sum()))
    sums[(picks >= 0.15) & (picks < 0.18)] = 0.0
    return sums


def test_compiled_exp_factors_equal_the_reference() -> None:
    rng = np.random.default_rng(11)
    tops = np.ascontiguousarray(np.stack([_sums(rng, 2000), _sums(rng, 2000)], axis=1))
    assert np.array_equal(_bounds.exp_factors(tops), python_exp_factors(tops))
    with pytest.raises(ValueError):
        _bounds.exp_factors(np.zeros((3, 3)))


def test_the_rate_bounds_are_at_least_the_sigmoid_of_the_sums() -> None:
    """The bounds from a product of exponentials against the sigmoid of the float sums, as the
    scorer computes it (clamped): never below, and within a part in 10**11 of it where the
    sigmoid is not clamped and neither exponential leaves the floats (past a sum of 700 the
    bound holds but is loose)."""
    from bidder.scorer import _sigmoid

    rng = np.random.default_rng(12)
    for _ in range(20):
        tops = np.stack([_sums(rng, 500), _sums(rng, 500)], axis=1)
        click, install = (float(x) for x in _sums(rng, 2))
        terms = BoundTerms(tops, True, click, install)
        rows = python_exp_factors(tops)
        request_click, request_both = python_request_factors(terms)
        by_click = python_rate_bounds(rows[:, 0], request_click)
        joint = python_rate_bounds(rows[:, 1], request_both)
        for r, (tc, ti) in enumerate(tops.tolist()):
            want_click = _sigmoid(tc + click)
            want_joint = _sigmoid((tc + click) + (ti + install))
            assert by_click[r] >= want_click and joint[r] >= want_joint
            if abs(tc + click) < 59.0 and max(abs(tc), abs(click)) < 700.0:
                assert by_click[r] <= want_click * (1 + 1e-11)
    assert math.exp(60.0) > EXP60_LOW and EXP_SHRINK < 1.0


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("n", [0, 1, 10, 300, 3000])
def test_the_key_order_gives_the_order_of_a_full_sort(n: int, extreme: bool) -> None:
    rng = np.random.default_rng(n)
    exps = -np.log(rng.uniform(2.0**-53, 1.0, n))
    bounds = np.round(rng.exponential(3.0, n))  # ties, and zeros (no finite key)
    bounds[rng.random(n) < 0.1] = 0.0
    if extreme:  # keys past the floats, infinite bounds (keys of 0), zero exponentials
        picks = rng.random(n)
        bounds[picks < 0.05] = 1e-310
        bounds[(picks >= 0.05) & (picks < 0.1)] = np.inf
        exps[(picks >= 0.1) & (picks < 0.15)] = 0.0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        keys = np.where(bounds > 0.0, exps / bounds, np.inf)
    finite = int(np.isfinite(keys).sum())
    want_j: list[int] = []
    want_k: list[float] = []
    for js, ks in _ascending(keys, finite):
        want_j += js
        want_k += ks
    order = _bounds.KeyOrder(exps, bounds)
    assert order.finite == finite
    got_j: list[int] = []
    got_k: list[float] = []
    step = 1
    while True:
        js, ks = order.take(step)
        if not js:
            break
        assert len(js) <= step
        got_j += js
        got_k += ks
        step = step % 17 + 1
    assert got_j == want_j and got_k == want_k


def test_all_tied_keys_come_by_index() -> None:
    exps = np.ones(50)
    order = _bounds.KeyOrder(exps, np.full(50, 2.0))
    assert order.take(100) == (list(range(50)), [0.5] * 50)


def _runs(rng: np.random.Generator, n_entries: int, order: str) -> np.ndarray:
    """Run entries as a shape has them: some entries without a run, the others increasing;
    after an incremental update some of them moved to the end in any order ("tail"); or
    none in order after the first run ("tail only")."""
    entries = np.flatnonzero(rng.random(n_entries) < 0.5).astype(np.intp)
    if order == "tail" and len(entries) > 1:
        moved = rng.random(len(entries)) < 0.1
        moved[0], moved[-1] = True, False  # the smallest after a larger one: out of order
        entries = np.concatenate([entries[~moved], rng.permutation(entries[moved])])
    elif order == "tail only":
        entries = rng.permutation(np.arange(n_entries, dtype=np.intp))
        entries[[0, int(np.argmax(entries))]] = entries[[int(np.argmax(entries)), 0]]
    return entries


@pytest.mark.parametrize("n_entries", [1, 63, 64, 65, 1000, 20_000])
@pytest.mark.parametrize("order", ["increasing", "tail", "tail only"])
def test_compiled_run_selection_equals_the_reference(n_entries: int, order: str) -> None:
    """Both select the runs whose entry's bit is set, in row order, whatever the order of
    the entries after the increasing first runs; the bitmap covers exactly those first
    runs."""
    rng = np.random.default_rng(n_entries)
    count = (n_entries + 63) // 64
    bids = rng.integers(0, 10**9, n_entries).astype(np.int64)
    ids = rng.integers(0, 10**12, n_entries).astype(np.int64)
    for _ in range(5):
        entries = _runs(rng, n_entries, order)
        words, rows_before = run_words(entries, n_entries)
        head = int(rows_before[-1])
        if order == "increasing" or len(entries) < 2:
            assert head == len(entries)
        else:
            assert head == 1 if order == "tail only" else 0 < head < len(entries)
        assert (np.diff(entries[:head]) > 0).all()
        flags = np.packbits(rng.random(n_entries) < rng.random(), bitorder="little")
        random = int.from_bytes(flags.tobytes(), "little")
        for mask in (0, (1 << n_entries) - 1, random):
            wanted = little_words(mask.to_bytes(8 * count, "little"))
            want = python_select_runs(wanted, entries, words, rows_before, bids, ids)
            got = _bounds.select_runs(wanted, entries, words, rows_before, bids, ids)
            assert [a.dtype for a in got] == [np.intp, np.intp, np.int64, np.int64]
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
            # the per-run meaning: each run whose entry's bit is set, in row order
            rows = [r for r, e in enumerate(entries.tolist()) if mask >> e & 1]
            assert got[0].tolist() == rows
            assert np.array_equal(got[1], entries[rows]) and np.array_equal(got[3], ids[got[1]])
            assert np.array_equal(got[2], bids[got[1]])


def test_run_selection_refuses_what_today_it_refuses() -> None:
    """An entry past the mask (64 bits a word) or the columns, in the bitmap or after it; a
    negative one; columns or a bitmap that do not fit."""
    one = np.zeros(70, dtype=np.int64)
    word = little_words(bytes(8))
    cases = [
        (word, [64], 70, one),  # past the mask, in the bitmap
        (word, [5, 3, 64], 70, one),  # past the mask, after it
        (little_words(bytes(16)), [8], 9, one[:8]),  # past the columns, in the bitmap
        (word, [3, 1, 8], 8, one[:8]),  # past the columns, after it
        (word, [-1], 8, one[:8]),
    ]
    for select in (_bounds.select_runs, python_select_runs):
        for wanted, entries, campaigns, col in cases:
            runs = np.asarray(entries, dtype=np.intp)
            words, rows = run_words(runs, campaigns)
            with pytest.raises(IndexError):
                select(wanted, runs, words, rows, col, col)
        runs = np.asarray([0], dtype=np.intp)
        words, rows = run_words(runs, 9)
        with pytest.raises(ValueError):
            select(word, runs, words, rows, one[:9], one[:8])
        with pytest.raises(ValueError):  # more runs in the bitmap than there are
            select(word, runs[:0], words, rows, one, one)
        with pytest.raises(ValueError):
            select(word, runs, words, rows[:1], one, one)


@pytest.mark.parametrize("seed", range(20))
def test_compiled_best_values_equal_the_reference(seed: int) -> None:
    from bidder.bounds import python_best_values

    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 30))
    counts = rng.integers(1, 6, m)
    starts = np.zeros(m + 1, dtype=np.intp)
    np.cumsum(counts, out=starts[1:])
    flat = rng.integers(0, POSITIONS, int(starts[-1])).astype(np.intp)
    predictions = rng.uniform(0.0, 0.3, (len(flat), 2))
    predictions[rng.random(len(flat)) < 0.1, 0] = 0.0  # no value
    predictions[rng.random(len(flat)) < 0.05] = 2.0  # a rate past 1: capped at 1
    codes = rng.integers(0, 3, POSITIONS).astype(np.int8)
    prices = rng.integers(0, 10**9, POSITIONS).astype(np.int64)
    lows = rng.integers(1, 400_000, m).astype(np.int64)
    want = python_best_values(predictions, flat, starts, codes, prices, lows)
    got = _bounds.best_values(predictions, flat, starts, codes, prices, lows)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert (want >= 0).all()


def test_one_sigmoid_of_the_summed_logits_bounds_the_product_of_two() -> None:
    """The install goal's rate bound: s(a) x s(b) <= s(a + b) (``(1 + e^-a)(1 + e^-b) >=
    1 + e^-(a+b)``), and it holds for the computed doubles too, clamp at +-60 included, where
    the margin is too small to absorb a rounding: there both sides round to the same 1.0."""
    from bidder.scorer import _sigmoid

    rng = np.random.default_rng(11)
    logits = np.concatenate(
        [rng.normal(-4.0, 3.0, 20_000), rng.uniform(-90.0, 90.0, 20_000), [-60.0, 0.0, 60.0]]
    )
    a, b = logits, rng.permutation(logits)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        assert _sigmoid(x) * _sigmoid(y) <= _sigmoid(x + y), (x, y)
    # tight where rates are small: within 5 % at rates of 2 % each
    assert _sigmoid(-7.8) / (_sigmoid(-3.9) ** 2) < 1.05
