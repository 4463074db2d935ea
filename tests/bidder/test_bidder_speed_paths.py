"""The bid path's shortcuts: the race's early stop, its safety cap, and crossed scoring."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from bidder_world import make_world
from perf_pipeline import NOW, crowded_request

import bidder.scorer as scorer
from bidder.outcome import Answer
from bidder.scoring import (
    FeatureRow,
    HashedLinearModel,
    cross_pairs,
    cross_prefixes,
    cross_suffixes,
    crosses,
    predict_crossed,
    request_features,
    static_features,
)
from bidder.targeting import RequestView
from fleet import portfolio
from fleet.config import Campaign, ConfigSnapshot, Creative
from sim import portfolio as synthetic
from sim import vocabulary as vocab


def _snapshot() -> ConfigSnapshot:
    pf = portfolio.validate(synthetic.generate(200, seed=3, creatives_per_campaign=5, now=NOW))
    return ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=pf.campaigns,
        version=1,
        fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
    )


def _model(seed: int = 1) -> HashedLinearModel:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.3, 1 << 12).astype(np.float32)
    return HashedLinearModel(w, w[::-1].copy(), -4.5, -3.5, bits=12, version=1)


@pytest.fixture(scope="module")
def snapshot() -> ConfigSnapshot:
    return _snapshot()


def _same(a: Answer, b: Answer) -> bool:
    return (a.outcome, a.reason, a.nbr, a.body, a.bids) == (
        b.outcome,
        b.reason,
        b.nbr,
        b.body,
        b.bids,
    )


def test_the_race_prices_few_candidates_and_answers_as_pricing_all(
    snapshot: ConfigSnapshot,
) -> None:
    wallclock = NOW.timestamp()
    full = make_world(snapshot, model=_model(), max_priced_per_imp=0, early_stop=False)
    everything = full.handle(crowded_request(2), wallclock=wallclock)
    priced = [c for c, _, _ in full.gate.calls]
    assert everything.outcome == "bid" and everything.candidates > 8 and len(priced) > 8

    early = make_world(snapshot, model=_model(), max_priced_per_imp=0)
    answer = early.handle(crowded_request(2), wallclock=wallclock)
    assert _same(answer, everything)
    assert 1 <= len(early.gate.calls) < len(priced) // 4
    assert early.pipeline._rng.getstate() == full.pipeline._rng.getstate()

    # refused by the gate: the race goes on to the next, as pricing everything would
    winner = answer.bids[0].campaign_id
    for world in (full, early):
        world.gate.denied = {winner}
        world.gate.calls.clear()
        world.pipeline._rng.seed(1)  # the same draw as the first request's
    refused = early.handle(crowded_request(2), wallclock=wallclock)
    assert _same(refused, full.handle(crowded_request(2), wallclock=wallclock))
    assert refused.bids[0].campaign_id != winner
    assert winner in [c for c, _, _ in early.gate.calls]

    # everything refused: every candidate was tried (up to the cap), the same no-bid reason
    for cap, early_stop in ((0, True), (3, True), (0, False)):
        world = make_world(snapshot, model=_model(), max_priced_per_imp=cap, early_stop=early_stop)
        world.gate.denied = set(priced)
        answer = world.handle(crowded_request(2), wallclock=wallclock)
        assert (answer.outcome, answer.reason) == ("nobid", "paced")
        assert len(world.gate.calls) == (cap or len(priced))  # the cap bounds even this


def test_the_cap_is_a_safety_net_that_stops_the_race(snapshot: ConfigSnapshot) -> None:
    world = make_world(snapshot, model=_model(), max_priced_per_imp=1)
    world.gate.denied = set()
    outcomes = []
    for seed in range(20):
        world.pipeline._rng.seed(seed)
        world.gate.calls.clear()
        answer = world.handle(crowded_request(2), wallclock=NOW.timestamp())
        outcomes.append(answer.outcome)
        assert len(world.gate.calls) == 1
        if answer.outcome == "bid":
            assert answer.bids[0].campaign_id == world.gate.calls[0][0]
    assert world.pipeline.capped_imps > 0 and "bid" in outcomes


def test_a_campaign_wins_one_imp_and_the_race_equals_pricing_all(snapshot: ConfigSnapshot) -> None:
    req = crowded_request(2)
    req["imp"] = [dict(req["imp"][0], id="1"), dict(req["imp"][0], id="2")]
    body = json.dumps(req).encode()
    for seed in range(10):
        full = make_world(snapshot, seed=seed, model=_model(), early_stop=False)
        early = make_world(snapshot, seed=seed, model=_model())
        answer = early.handle(body, wallclock=NOW.timestamp())
        assert _same(answer, full.handle(body, wallclock=NOW.timestamp()))
        assert len(answer.bids) == 2
        assert len({b.campaign_id for b in answer.bids}) == 2
        assert len(early.gate.calls) < len(full.gate.calls)


def _rows(
    n: int, seed: int
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], tuple[str, ...], list[str]]:
    rng = random.Random(seed)
    statics, prefixes = [], []
    for k in range(n):
        c = Campaign(
            id=rng.randint(1, 50),
            advertiser_id=1,
            name=f"c{k}",
            goal_type="CPI",
            goal_price_micros=2_000_000,
            max_bid_cpm_micros=5_000_000,
            daily_budget_micros=10**9,
            total_budget_micros=10**10,
            currency="USD",
        )
        cr = Creative(
            id=rng.randint(1, 500),
            campaign_id=c.id,
            format="banner",
            w=300,
            h=250,
            markup="",
            adomain=("a.example",),
        )
        statics.append(static_features(c, cr))
        prefixes.append(cross_prefixes(c, cr))
    view = RequestView(
        country=rng.choice(["USA", "DEU"]),
        os="ios",
        inventory="app",
        app_bundle="com.x.y",
        segments=frozenset(f"seg-{rng.randrange(40)}" for _ in range(rng.randrange(5))),
    )
    return statics, prefixes, cross_suffixes(view, "com.x.y"), request_features(view)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crossed_scoring_equals_batch_scoring_and_predict(seed: int) -> None:
    statics, prefixes, suffixes, shared = _rows(20, seed)
    model, fresh = _model(seed), _model(seed)  # fresh: empty memo tables
    a = predict_crossed(model, shared, statics, prefixes, suffixes)
    assert predict_crossed(model, shared, statics, prefixes, suffixes) == a  # from the memos
    rows = [
        FeatureRow(st, cross_pairs(pre, suffixes))
        for st, pre in zip(statics, prefixes, strict=True)
    ]
    batch = [p for pair in fresh.predict_batch(shared, rows) for p in pair]
    assert batch == pytest.approx([p for pair in a for p in pair], rel=1e-9)
    for row, (pc, pi) in zip(rows, a, strict=True):
        one = fresh.predict(shared + row.all())
        assert pc == pytest.approx(one[0], rel=1e-5) and pi == pytest.approx(one[1], rel=1e-5)


def test_crosses_are_prefixes_completed_by_the_request_suffixes() -> None:
    _, prefixes, _, _ = _rows(1, 4)
    view = RequestView(country="DEU", os="ios", inventory="app", app_bundle="com.x.y")
    assert crosses(prefixes[0], view, "com.x.y") == [
        p + x for p, x in zip(prefixes[0][:6], cross_suffixes(view, "com.x.y"), strict=True)
    ]
    view.segments = frozenset({"s2", "s1"})
    assert crosses(prefixes[0], view, "com.x.y")[6:] == [
        prefixes[0][6] + "s1",
        prefixes[0][6] + "s2",
    ]
    view.personalize = False  # the user's segments may not be used: no cross with them
    assert len(crosses(prefixes[0], view, "com.x.y")) == 6


def test_the_compiled_scoring_loop_is_built() -> None:
    # setup.py build_ext --inplace
    assert scorer.COMPILED and scorer.score is not scorer.python_score
