"""The bid path's shortcuts: the top-K pricing cap and crossed scoring."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from bidder_world import make_world
from perf_pipeline import NOW, crowded_request

import bidder.scorer as scorer
from bidder.scoring import (
    FeatureRow,
    HashedLinearModel,
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
from fleet.events import BidEvent
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


def test_only_the_top_k_candidates_by_value_are_priced(snapshot: ConfigSnapshot) -> None:
    wallclock = NOW.timestamp()
    full = make_world(snapshot, model=_model(), max_priced_per_imp=0)
    answer = full.handle(crowded_request(2), wallclock=wallclock)
    priced = [c for c, _, _ in full.gate.calls]
    assert answer.outcome == "bid" and answer.candidates > 8 and len(priced) > 8

    capped = make_world(snapshot, model=_model(), max_priced_per_imp=3)
    answer = capped.handle(crowded_request(2), wallclock=wallclock)
    assert answer.outcome == "bid"
    top = [c for c, _, _ in capped.gate.calls]
    assert len(top) == 3 and set(top) <= set(priced)
    assert answer.bids[0].campaign_id in top

    # refused by the gate: the next best are priced until 3 survive
    capped = make_world(snapshot, model=_model(), max_priced_per_imp=3)
    capped.gate.denied = set(top)
    answer = capped.handle(crowded_request(2), wallclock=wallclock)
    assert [c for c, _, _ in capped.gate.calls][:3] == top
    assert len(capped.gate.calls) == 6 and answer.bids[0].campaign_id not in top

    # everything refused: every candidate was tried, the no-bid reason is the same as uncapped
    for cap in (0, 3):
        world = make_world(snapshot, model=_model(), max_priced_per_imp=cap)
        world.gate.denied = set(priced)
        answer = world.handle(crowded_request(2), wallclock=wallclock)
        assert (answer.outcome, answer.reason) == ("nobid", "paced")
        assert len(world.gate.calls) == len(priced)


def test_with_a_cap_of_one_the_most_valuable_candidate_bids(snapshot: ConfigSnapshot) -> None:
    def winner_value(cap: int, seed: int) -> int:
        world = make_world(snapshot, seed=seed, model=_model(), max_priced_per_imp=cap)
        answer = world.handle(crowded_request(2), wallclock=NOW.timestamp())
        (bid,) = [e for e in answer.events if isinstance(e, BidEvent)]
        return bid.value_cpm_micros

    best = winner_value(1, 1)
    assert all(winner_value(0, seed) <= best for seed in range(12))
    assert any(winner_value(0, seed) < best for seed in range(12))  # uncapped: others win too


def test_a_later_imp_prices_one_more_per_earlier_imp(snapshot: ConfigSnapshot) -> None:
    req = crowded_request(2)
    req["imp"] = [dict(req["imp"][0], id="1"), dict(req["imp"][0], id="2")]
    world = make_world(snapshot, model=_model(), max_priced_per_imp=2)
    answer = world.handle(json.dumps(req).encode(), wallclock=NOW.timestamp())
    assert len(world.gate.calls) == 2 + 3
    assert len(answer.bids) == 2  # a campaign wins at most one imp, the second still has one
    assert len({b.campaign_id for b in answer.bids}) == 2


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
        country=rng.choice(["USA", "DEU"]), os="ios", inventory="app", app_bundle="com.x.y"
    )
    return statics, prefixes, cross_suffixes(view, "com.x.y"), request_features(view)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crossed_scoring_equals_batch_scoring_and_predict(seed: int) -> None:
    statics, prefixes, suffixes, shared = _rows(20, seed)
    model, fresh = _model(seed), _model(seed)  # fresh: empty memo tables
    a = predict_crossed(model, shared, statics, prefixes, suffixes)
    assert predict_crossed(model, shared, statics, prefixes, suffixes) == a  # from the memos
    rows = [
        FeatureRow(st, [p + x for p, x in zip(pre, suffixes, strict=True)])
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
        p + x for p, x in zip(prefixes[0], cross_suffixes(view, "com.x.y"), strict=True)
    ]


def test_the_compiled_scoring_loop_is_built() -> None:
    # setup.py build_ext --inplace
    assert scorer.logistic_positions is not scorer.python_logistic_positions
