"""PositionScorer: the model's own predictions, exactly, from arrays laid out by position; the
compiled loops (bidder/_scorer.pyx) against their Python references; bounds that hold."""

from __future__ import annotations

import itertools
import random

import mmh3
import numpy as np
import pytest
from bidder_world import NOON, load_snapshot, make_world
from perf_pipeline import crowded_request

from bidder import scorer as scorer_module
from bidder.bounds import bound_terms, exp_factors, python_rate_bounds, python_request_factors
from bidder.scorer import (
    PositionScorer,
    PositionTables,
    StaticScorer,
    position_scorer,
    python_bound,
    python_hash_rows,
    python_midstate,
    python_resume,
    python_score,
    python_static_sums,
)
from bidder.scoring import (
    HashedLinearModel,
    PriorModel,
    cross_pairs,
    cross_prefixes,
    cross_suffixes,
    static_features,
)
from bidder.targeting import RequestView, TargetingIndex


def _model(seed: int, scale: float = 0.8, hash_seed: int = 0) -> HashedLinearModel:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, scale, 1 << 12).astype(np.float32)
    return HashedLinearModel(w, w[::-1].copy(), -3.0, -2.0, bits=12, version=seed, seed=hash_seed)


def _rows() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    index = TargetingIndex(load_snapshot())
    statics, prefixes = [], []
    for e in index.entries:
        for cr in e.creatives:
            statics.append(static_features(e.campaign, cr))
            prefixes.append(cross_prefixes(e.campaign, cr))
    return statics, prefixes


def _views(count: int) -> list[RequestView]:
    rng = random.Random(3)
    return [
        RequestView(
            country=rng.choice(("USA", "DEU", "BRA", "", "ÖST")),
            os=rng.choice(("ios", "android")),
            inventory="app",
            app_bundle=rng.choice(("", "a", "com.example.app" + "x" * rng.randint(0, 9))),
            local_hour=rng.randint(0, 23),
            # none, a few, or more than the 16 crossed; sometimes not to be used (privacy)
            segments=frozenset(
                f"seg-{rng.randrange(40):03d}" for _ in range(rng.choice((0, 0, 3, 25)))
            ),
            personalize=rng.random() < 0.8,
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("hash_seed", [0, 977])
def test_predictions_equal_the_models_own(hash_seed: int) -> None:
    statics, prefixes = _rows()
    model, reference = _model(1, hash_seed=hash_seed), _model(1, hash_seed=hash_seed)
    scorer = PositionScorer(model, PositionTables(statics, prefixes, hash_seed))
    rng = random.Random(5)
    for view in _views(60):
        shared = [f"country={view.country}", f"os={view.os}", f"hour={view.local_hour}"]
        suffixes = cross_suffixes(view, view.app_bundle)
        positions = sorted(rng.sample(range(len(statics)), rng.randint(1, len(statics))))
        got = scorer.predict(shared, positions, suffixes)
        want = reference.predict_crossed(
            shared, [statics[p] for p in positions], [prefixes[p] for p in positions], suffixes
        )
        assert got == want


def test_midstates_resume_to_murmur3_of_the_whole_string() -> None:
    rng = random.Random(4)
    for _ in range(300):
        prefix = "".join(rng.choice("ab^=é1") for _ in range(rng.randint(0, 11))).encode()
        suffix = "".join(rng.choice("xyz.ü") for _ in range(rng.randint(0, 9))).encode()
        seed = rng.choice((0, 1, 0xFFFFFFFF))
        state = python_midstate(prefix, seed)
        assert python_resume(state, suffix) == mmh3.hash(prefix + suffix, seed, signed=False)


def test_compiled_loops_equal_the_python_references() -> None:
    if not scorer_module.COMPILED:
        pytest.skip("bidder._scorer is not built")
    from bidder import _scorer

    statics, prefixes = _rows()
    hashes, states = _scorer.hash_rows(statics, prefixes, 7)
    ref_hashes, ref_states = python_hash_rows(statics, prefixes, 7)
    assert np.array_equal(hashes, ref_hashes) and np.array_equal(states, ref_states)
    model = _model(2, 30.0)  # large weights: clamped sums too
    weights, mask = model.weights, (1 << model.bits) - 1
    static = _scorer.static_sums(hashes, weights, mask)
    assert np.array_equal(static, python_static_sums(hashes, weights, mask))
    rng = random.Random(8)
    for view in _views(40):
        suffixes = list(cross_suffixes(view, view.app_bundle))
        positions = np.array(
            [rng.randrange(len(statics)) for _ in range(rng.randint(1, 30))], dtype=np.intp
        )
        got, want = np.empty((len(positions), 2)), np.empty((len(positions), 2))
        _scorer.score(positions, static, states, suffixes, weights, mask, 0.5, -0.25, got)
        python_score(positions, static, states, suffixes, weights, mask, 0.5, -0.25, want)
        assert np.array_equal(got, want)
        _scorer.bound(positions, static, 0.5, -0.25, 3.0, 1.0, got)
        python_bound(positions, static, 0.5, -0.25, 3.0, 1.0, want)
        assert np.array_equal(got, want)
    out = np.empty((1, 2))
    with pytest.raises(IndexError):
        _scorer.score(
            np.array([len(statics)], dtype=np.intp),
            static,
            states,
            suffixes,
            weights,
            mask,
            0.0,
            0.0,
            out,
        )
    with pytest.raises(ValueError, match="suffix"):
        _scorer.score(
            np.array([0], dtype=np.intp),
            static,
            states,
            suffixes[:2],
            weights,
            mask,
            0.0,
            0.0,
            out,
        )


@pytest.mark.parametrize("by_campaign", [False, True])
@pytest.mark.parametrize("scale", [0.05, 0.8, 30.0])
def test_run_values_equal_scoring_the_gathered_runs_then_best_values(
    scale: float, by_campaign: bool
) -> None:
    """``bidder.bounds.RunValues`` (one compiled pass over runs) gives, bit for bit, what the
    race's refinement computed before it: the runs' positions gathered, scored
    (``python_score``) and reduced by ``python_best_values``; and so does its fallback for
    other scorers (a static one stands in: the same sums, then the scorer's own numbers).
    Runs are random positions, or each a campaign's creatives, as in a snapshot, whose
    campaign-level crosses the compiled pass hashes once a run."""
    if not scorer_module.COMPILED:
        pytest.skip("bidder._scorer is not built")
    from bidder import _scorer
    from bidder.bounds import RunValues, python_best_values
    from bidder.candidates import ShapeRuns, run_words

    statics, prefixes = _rows()
    scorer = PositionScorer(_model(4, scale), PositionTables(statics, prefixes, 0))
    rng = np.random.default_rng(int(scale * 100))
    n = len(statics)
    if by_campaign:  # a run where the campaign changes, its creatives in order
        cuts = np.flatnonzero([a[0] != b[0] for a, b in itertools.pairwise(prefixes)]) + 1
        order = np.arange(n, dtype=np.intp)
    else:
        cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, 40), replace=False))
        order = rng.permutation(n).astype(np.intp)
    starts = np.concatenate([[0], cuts, [n]]).astype(np.intp)
    assert len(starts) > 2 and (not by_campaign or np.diff(starts).max() > 1)
    entries = np.arange(len(starts) - 1, dtype=np.intp)
    runs = ShapeRuns(order, starts, entries, {}, *run_words(entries, len(entries)))
    codes = rng.integers(0, 3, n).astype(np.int8)
    prices = rng.integers(0, 10**9, n).astype(np.int64)
    past_the_stack = 0
    for view in _views(30):
        z0 = scorer.shared_sum([f"country={view.country}", f"os={view.os}"])
        suffixes = cross_suffixes(view, view.app_bundle)
        cand_runs = rng.integers(0, len(starts) - 1, 40).astype(np.intp)  # candidate -> run
        lows = rng.integers(1, 2_000_000, 40).astype(np.int64)
        js = rng.choice(40, int(rng.integers(1, 25)), replace=False).tolist()
        if len(suffixes) > 12:  # every candidate, thrice: past the buckets' room on the stack
            js = list(range(40)) * 3
        at = cand_runs[js]
        past_the_stack += int(np.diff(starts)[at].sum()) * len(suffixes) > 2048
        flat, groups = runs.gather(at)
        scored = np.empty((len(flat), 2))
        python_score(
            flat, scorer.static, scorer.tables.states, list(suffixes), scorer.weights,
            scorer.mask, z0[0], z0[1], scored,
        )  # fmt: skip
        want = python_best_values(scored, flat, groups, codes, prices, lows[js]).tolist()
        got = RunValues(scorer, z0, suffixes, runs, cand_runs, lows, codes, prices)(js)
        assert got == want and all(type(v) is float for v in got)
        # any other scorer: gathered, scored by the scorer, reduced by best_values
        rates = scorer.score(z0, np.arange(n, dtype=np.intp), list(suffixes))
        fallback = RunValues(
            StaticScorer(PriorModel(), rates), z0, suffixes, runs, cand_runs, lows, codes, prices
        )
        assert fallback(js) == want
    assert past_the_stack > 0
    with pytest.raises(IndexError):
        _scorer.RunScorer(
            cand_runs, lows, starts, runs.positions, scorer.static, scorer.tables.states,
            [s.encode() for s in suffixes], scorer.pairs, scorer.mask, 0.0, 0.0, codes, prices,
        )([40])  # fmt: skip
    with pytest.raises(IndexError):
        _scorer.RunScorer(
            cand_runs + len(starts), lows, starts, runs.positions, scorer.static,
            scorer.tables.states, [s.encode() for s in suffixes], scorer.pairs, scorer.mask,
            0.0, 0.0, codes, prices,
        )([0])  # fmt: skip


@pytest.mark.parametrize("scale", [0.05, 0.8, 30.0])
def test_bounds_are_never_below_the_predictions(scale: float) -> None:
    statics, prefixes = _rows()
    scorer = PositionScorer(_model(3, scale), PositionTables(statics, prefixes, 0))
    positions = np.arange(len(statics), dtype=np.intp)
    for view in _views(30):
        z0 = scorer.shared_sum([f"country={view.country}", f"os={view.os}"])
        suffixes = list(cross_suffixes(view, view.app_bundle))
        exact = scorer.score(z0, positions, suffixes)
        assert (scorer.bound(z0, positions, len(suffixes)) >= exact).all()
        assert (scorer.bound(z0, positions) >= exact).all()  # the most crosses a request has
        # the weight bounds' rates: from the static sums' factors and the request's
        terms = bound_terms(scorer, z0, len(suffixes))
        rows = exp_factors(np.ascontiguousarray(scorer.static))
        request_click, request_both = python_request_factors(terms)
        assert (python_rate_bounds(rows[:, 0], request_click) >= exact[:, 0]).all()
        joint = python_rate_bounds(rows[:, 1], request_both)
        assert (joint >= exact[:, 0] * exact[:, 1]).all()


def test_the_campaign_is_crossed_with_each_usable_segment_only() -> None:
    _, prefixes = _rows()
    pre = prefixes[0]
    seen = {"with": 0, "without": 0}
    for view in _views(60):
        suffixes = cross_suffixes(view, view.app_bundle)
        crossed = cross_pairs(pre, suffixes)
        segs = [c for c in crossed if c.startswith("campaign^seg=")]
        if view.personalize and view.segments:
            want = sorted(view.segments)[:16]
            assert segs == [pre[-1] + x for x in want]
            seen["with"] += 1
        else:
            assert segs == []
            seen["without"] += 1
        assert crossed[:6] == [p + x for p, x in zip(pre[:6], suffixes[:6], strict=True)]
    assert seen["with"] > 5 and seen["without"] > 5
    with pytest.raises(ValueError, match="suffixes"):
        cross_pairs(pre, ("a",) * 23)
    with pytest.raises(ValueError, match="suffixes"):
        cross_pairs(pre, ("a",) * 5)


def test_the_scorer_keeps_no_memo_and_the_tables_are_linear() -> None:
    statics, prefixes = _rows()
    tables = PositionTables(statics, prefixes, 0)
    assert tables.nbytes == len(statics) * (6 * 4 + 7 * 12)
    scorer = PositionScorer(_model(1), tables)
    before = dict(vars(scorer)) if hasattr(scorer, "__dict__") else {}
    for view in _views(50):
        scorer.predict(["a=1"], [0, 1], cross_suffixes(view, view.app_bundle))
    assert {k: id(v) for k, v in vars(scorer).items()} == {k: id(v) for k, v in before.items()}


def test_only_hashed_linear_models_get_a_scorer_and_the_pipeline_follows_set_model() -> None:
    statics, prefixes = _rows()
    tables = PositionTables(statics, prefixes, 0)
    assert position_scorer(PriorModel(), tables) is None
    assert position_scorer(_model(1), None) is None
    with pytest.raises(ValueError, match="seed"):
        PositionScorer(_model(1, hash_seed=5), tables)

    world = make_world(load_snapshot(), model=_model(1))
    first = world.handle(crowded_request(2), wallclock=NOON)
    world.pipeline.set_model(_model(7, hash_seed=3))  # another seed: the tables are rehashed
    compiled = world.pipeline._compiled
    assert compiled is not None and compiled.scorer is not None
    assert compiled.scorer.version == 7 and compiled.tables is not None
    assert compiled.tables.seed == 3
    second = world.handle(crowded_request(2), wallclock=NOON)
    assert first.outcome == second.outcome == "bid"
    first_event, second_event = first.events[1], second.events[1]
    assert (first_event.p_click, first_event.model_version) != (  # type: ignore[union-attr]
        second_event.p_click,  # type: ignore[union-attr]
        second_event.model_version,  # type: ignore[union-attr]
    )
    world.pipeline.set_model(PriorModel())  # a static model: its predictions by position
    compiled = world.pipeline._compiled
    assert compiled is not None and isinstance(compiled.scorer, StaticScorer)
    assert compiled.scorer.rates.shape == (len(compiled.index.creatives), 2)
    assert world.handle(crowded_request(2), wallclock=NOON).outcome == "bid"
