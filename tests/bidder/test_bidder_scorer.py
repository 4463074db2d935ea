"""PositionScorer: the model's own predictions, exactly, from arrays laid out by position."""

from __future__ import annotations

import random

import numpy as np
import pytest
from bidder_world import NOON, load_snapshot, make_world
from perf_pipeline import crowded_request

from bidder import scorer as scorer_module
from bidder.scorer import PositionScorer, position_scorer, python_logistic_positions
from bidder.scoring import (
    HashedLinearModel,
    PriorModel,
    cross_prefixes,
    cross_suffixes,
    static_features,
)
from bidder.targeting import RequestView, TargetingIndex


def _model(seed: int, scale: float = 0.8) -> HashedLinearModel:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, scale, 1 << 12).astype(np.float32)
    return HashedLinearModel(w, w[::-1].copy(), -3.0, -2.0, bits=12, version=seed)


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
            country=rng.choice(("USA", "DEU", "BRA", "")),
            os=rng.choice(("ios", "android")),
            inventory="app",
            app_bundle=f"com.example.app{rng.randint(1, 9)}",
            local_hour=rng.randint(0, 23),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("max_table_bytes", [32 << 20, 2_000])  # 2 kB: cleared all the time
def test_predictions_equal_the_models_own(max_table_bytes: int) -> None:
    statics, prefixes = _rows()
    model, reference = _model(1), _model(1)
    scorer = PositionScorer(model, statics, prefixes, max_table_bytes=max_table_bytes)
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
        if max_table_bytes < 10_000:
            assert scorer._table_bytes <= max_table_bytes


def test_compiled_loop_equals_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = scorer_module.logistic_positions
    if compiled is python_logistic_positions:
        pytest.skip("bidder._scorer is not built")
    statics, prefixes = _rows()
    twins = [PositionScorer(_model(2, 30.0), statics, prefixes) for _ in range(2)]  # clamped too
    rng = random.Random(8)
    for view in _views(40):
        suffixes = cross_suffixes(view, view.app_bundle)
        positions = [rng.randrange(len(statics)) for _ in range(rng.randint(1, 30))]
        outputs = []
        for twin, loop in zip(twins, (compiled, python_logistic_positions), strict=True):
            monkeypatch.setattr(scorer_module, "logistic_positions", loop)
            outputs.append(twin.predict(["a=1"], positions, suffixes))
        assert outputs[0] == outputs[1]
    monkeypatch.setattr(scorer_module, "logistic_positions", compiled)
    with pytest.raises(IndexError):
        twins[0].predict([], [len(statics)], suffixes)
    one_row = twins[0].ids[:1].copy()
    with pytest.raises(ValueError, match="rows"):
        tables = [np.full((len(p), 2), np.nan) for p in twins[0].prefixes]
        compiled([len(statics) - 1], twins[0].static, one_row, tables, lambda j, k: 0j, 0.0, 0.0)


def test_only_hashed_linear_models_get_a_scorer_and_the_pipeline_follows_set_model() -> None:
    statics, prefixes = _rows()
    assert position_scorer(PriorModel(), statics, prefixes) is None
    assert position_scorer(_model(1), [], []) is None

    world = make_world(load_snapshot(), model=_model(1))
    first = world.handle(crowded_request(2), wallclock=NOON)
    world.pipeline.set_model(_model(7))
    compiled = world.pipeline._compiled
    assert compiled is not None and compiled.scorer is not None
    assert compiled.scorer.version == 7
    second = world.handle(crowded_request(2), wallclock=NOON)
    assert first.outcome == second.outcome == "bid"
    first_event, second_event = first.events[1], second.events[1]
    assert (first_event.p_click, first_event.model_version) != (  # type: ignore[union-attr]
        second_event.p_click,  # type: ignore[union-attr]
        second_event.model_version,  # type: ignore[union-attr]
    )
    world.pipeline.set_model(PriorModel())
    compiled = world.pipeline._compiled
    assert compiled is not None and compiled.scorer is None
    assert world.handle(crowded_request(2), wallclock=NOON).outcome == "bid"
