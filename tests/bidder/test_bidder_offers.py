"""The compiled pricing loop (bidder/_offers.pyx) against its reference (bidder/offers.py): the
same answers, drops, gate questions and random draws, request after request; and the lazy bid
path (bidder/imp_offers.py: caps and creatives only for the candidates the race reaches) against
doing every candidate first, with frequency caps, deals and Thompson sampling in play."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bidder_world import NOON, World, load_snapshot, make_world
from perf_pipeline import crowded_request, typical_request
from test_bidder_fixtures import expand

import bidder.imp_offers as imp_offers_module
from bidder import offers
from bidder.creative import NoPerformance
from bidder.offers import MAX_MICROS, Chosen, python_price_offers
from bidder.pricing import Shader
from bidder.scoring import HashedLinearModel
from bidder.targeting import TargetingIndex
from fleet.config import Campaign

compiled = pytest.importorskip("bidder._offers")

FIXTURES = Path(__file__).parent / "fixtures"


def _model(seed: int) -> HashedLinearModel:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.8, 1 << 12).astype(np.float32)
    return HashedLinearModel(w, w[::-1].copy(), -3.0, -2.0, bits=12, version=1)


class Clicks:
    """Creative records that make Thompson sampling draw (and so use the rng)."""

    def stats(self, creative_id: int) -> tuple[int, int] | None:
        return (creative_id * 37 % 500, creative_id % 7) if creative_id % 3 else None


def _fixture_requests() -> Iterator[dict[str, Any]]:
    for path in sorted(FIXTURES.glob("cases_*.json")):
        for case in json.loads(path.read_text())["cases"]:
            if "request" in case:
                yield expand(case["request"])


def _requests(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = list(_fixture_requests())
    for n in range(300):
        req = crowded_request(rng.choice((1, 2))) if n % 5 == 0 else typical_request(rng, n, 1)
        req["id"] = f"r{n}"
        req["at"] = rng.choice((1, 1, 2, 2, 3, 10**30, -(2**63) - 1))  # odd ones: second price
        imp = req["imp"][0]
        imp["bidfloor"] = rng.choice((0.0, 0.05, 0.3, 1.2, 4.0, 1e30))
        if rng.random() < 0.3:  # a second and third imp: one campaign per imp
            req["imp"] = [dict(imp, id=str(k)) for k in range(1, 4)]
        out.append(req)
    return out


def _world(seed: int) -> World:
    world = make_world(load_snapshot(), seed=seed, model=_model(seed), performance=Clicks())
    world.gate.denied = {3, 9}
    world.frequency.counts = {2: 5, 4: None}
    # a market that has learnt a little: several sigmas, so several shading tables
    for k in range(40):
        world.market.observe_win(f"1|testx|USA|{300 + k % 3}x250", 400_000 + 37_000 * k)
        world.market.observe_loss("2|testx|USA|300x250", 900_000 + 11_000 * k)
    return world


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_loops_answer_exactly_as_the_reference(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert offers.price_offers is compiled.price_offers
    requests = _requests(seed)
    results = []
    for python in (False, True):
        if python:
            monkeypatch.setattr(imp_offers_module, "price_offers", python_price_offers)
        world = _world(seed)
        answers = [
            world.handle(req, wallclock=NOON + 3600 * (i % 24)) for i, req in enumerate(requests)
        ]
        results.append(
            (
                [(a.status, a.outcome, a.reason, a.body, a.candidates) for a in answers],
                [[(e.__class__.__name__, e) for e in a.events] for a in answers],
                world.gate.calls,
                world.pipeline._rng.random(),
            )
        )
    assert results[0][0] == results[1][0]
    assert results[0][2] == results[1][2]
    assert results[0][1] == results[1][1]
    assert results[0][3] == results[1][3]
    assert not any(a[2] == "internal" for a in results[0][0])
    outcomes = {(status, reason) for status, _, reason, _, _ in results[0][0]}
    for wanted in ((200, "bid"), (204, "floor"), (204, "no_candidates")):
        assert wanted in outcomes, outcomes  # the stream covers bids and the drop reasons


class PWinOnly:
    """A market model without log-normal parameters: pricing goes through ``price``."""

    def p_win(self, segment: str, bid_micros: int) -> float:
        return min(1.0, bid_micros / 3_000_000)

    def observe_win(self, segment: str, price_micros: int, exact: bool = True) -> None:
        pass

    def observe_loss(self, segment: str, bid_micros: int) -> None:
        pass


@pytest.mark.parametrize("params", [None, (13.2, 0.8), (13.9, 0.01), (float("nan"), 1.0)])
def test_price_offers_twins_agree_on_every_auction_type(
    params: tuple[float, float] | None,
) -> None:
    index = TargetingIndex(load_snapshot())
    rng = random.Random(5)
    runs = index._eligible(index.all_creatives)[1]
    candidates = [index._candidate(i, run) for i, run in runs.items()]
    assert len(candidates) > 5
    outputs = []
    for twin in (compiled.price_offers, python_price_offers):
        rng = random.Random(5)
        chosen = Chosen()
        for cand in candidates * 3:
            chosen.candidates.append(cand)
            chosen.positions.append(cand.positions[0])
            chosen.floors.append(rng.choice((0, 1, 150_000, 2_500_000, MAX_MICROS)))
            chosen.auction_types.append(rng.choice((1, 2, 3, 7, 10**30)))
        predictions = [(rng.random() ** 3, rng.random()) for _ in chosen.candidates]
        drops: dict[str, int] = {}
        ids: list[int] = []
        weights: list[float] = []
        rows: list[Any] = []
        asked: list[tuple[int, float]] = []

        def allow(
            campaign: Campaign,
            price: int,
            now: float,
            p_win: float,
            asked: list[tuple[int, float]] = asked,
        ) -> bool:
            asked.append((price, p_win))
            return campaign.id % 4 != 1

        twin(
            chosen,
            predictions,
            lambda at: (f"{at}|x", params),
            len(chosen.candidates) // 2,
            0.2,
            10_000,
            PWinOnly(),
            Shader(),
            allow,
            NOON,
            drops,
            ids,
            weights,
            rows,
        )
        outputs.append((drops, ids, weights, rows, asked))
    assert repr(outputs[0]) == repr(outputs[1])  # (repr: NaN p_win compares unequal)
    assert outputs[0][1], "nothing was offered: the test does not exercise pricing"


def _with_deals(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every third request offers deals: ours (floors in several currencies, one unknown,
    fixed price, an odd auction type), as a private auction now and then."""
    out = []
    deals = [
        {"id": "deal-001", "bidfloor": 0.4, "bidfloorcur": "EUR", "at": 3},
        {"id": "deal-001", "bidfloor": 1.0, "bidfloorcur": "XXX"},
        {"id": "deal-001", "at": 1},
        {"id": "deal-001", "bidfloor": 0.5, "at": 10**30},
    ]
    for n, req in enumerate(requests):
        if n % 3 == 0 and req.get("imp"):
            req = json.loads(json.dumps(req))
            req["imp"][0]["pmp"] = {"private_auction": n % 2, "deals": [deals[n % len(deals)]]}
        out.append(req)
    return out


@pytest.mark.parametrize("seed", [1, 4])
def test_the_lazy_path_answers_as_doing_every_candidate_first(seed: int) -> None:
    """Caps read and creatives chosen (Thompson sampling, keyed draws) only for the candidates
    the race reaches, against every candidate's caps and creative first and every candidate
    priced: the same answers, events and random state."""
    requests = _with_deals(_requests(seed))
    results = []
    for lazy in (True, False):
        world = _world(seed)
        world.pipeline.lazy = lazy
        if not lazy:
            world.pipeline.settings = dataclasses.replace(world.pipeline.settings, early_stop=False)
        answers = [
            world.handle(req, wallclock=NOON + 3600 * (i % 24)) for i, req in enumerate(requests)
        ]
        results.append(
            (
                [(a.status, a.outcome, a.reason, a.body, a.candidates) for a in answers],
                [[(e.__class__.__name__, e) for e in a.events] for a in answers],
                world.pipeline._rng.random(),
                len(world.gate.calls),
                len(world.frequency.keys),
            )
        )
    assert results[0][:3] == results[1][:3]
    assert results[0][3] < results[1][3]  # the lazy path priced fewer candidates
    assert 0 < results[0][4] < results[1][4]  # and read fewer caps
    reasons = {reason for _, _, reason, _, _ in results[0][0]}
    assert {"bid", "floor", "currency", "no_candidates"} <= reasons, reasons


class NothingKnown:
    """No record of any creative, but not NoPerformance: Thompson sampling's own path."""

    def stats(self, creative_id: int) -> tuple[int, int] | None:
        return None


def test_the_no_history_shortcut_draws_the_creatives_thompson_sampling_would() -> None:
    requests = _requests(6)
    answers = []
    for performance in (NoPerformance(), NothingKnown()):
        world = make_world(load_snapshot(), seed=6, model=_model(6), performance=performance)
        answers.append([world.handle(req, wallclock=NOON).body for req in requests])
    assert answers[0] == answers[1]
