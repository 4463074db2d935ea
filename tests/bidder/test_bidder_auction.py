from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidder.auction import auction_weight, draw, run
from bidder.creative import NoPerformance, choose_creative
from fleet.config import Creative


def test_weight_is_expected_profit() -> None:
    assert auction_weight(0.5, 2_000_000, 1_500_000) == pytest.approx(250_000)
    assert auction_weight(0.9, 1_000_000, 1_000_000) == 0.0
    assert auction_weight(0.9, 1_000_000, 1_200_000) == 0.0
    assert auction_weight(0.0, 2_000_000, 1_000_000) == 0.0
    assert auction_weight(float("nan"), 2_000_000, 1_000_000) == 0.0


def test_winners_are_drawn_in_proportion_to_their_weights() -> None:
    rng = random.Random(7)
    weights = [600.0, 300.0, 100.0, 0.0]
    n = 30_000
    counts = Counter(draw(weights, rng) for _ in range(n))
    for i, w in enumerate(weights):
        expected = n * w / sum(weights)
        assert abs(counts[i] - expected) <= 4 * (expected * (1 - w / sum(weights))) ** 0.5 + 1
    assert counts[3] == 0  # a bid without expected profit never wins
    assert counts[2] > 2000  # the weakest profitable campaign still gets its share


def test_all_zero_weights_draw_uniformly_and_empty_draws_nothing() -> None:
    rng = random.Random(3)
    counts = Counter(draw([0.0, 0.0, 0.0], rng) for _ in range(9000))
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 2700
    assert draw([], rng) is None
    assert draw([5.0], rng) == 0


@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 6), st.floats(0, 1e6)), max_size=6),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 2**32),
)
def test_a_campaign_wins_at_most_one_imp(imps: list[list[tuple[int, float]]], seed: int) -> None:
    rng = random.Random(seed)
    per_imp = [([c for c, _ in offers], [w for _, w in offers]) for offers in imps]
    winners = run(per_imp, rng)
    assert len(winners) == len(imps)
    chosen = [per_imp[i][0][k] for i, k in enumerate(winners) if k is not None]
    assert len(chosen) == len(set(chosen))
    for (ids, _), k in zip(per_imp, winners, strict=True):
        if k is None:  # no offer, or every campaign offering already won an earlier imp
            assert all(c in chosen for c in ids)


def _creatives(n: int) -> list[Creative]:
    return [
        Creative(id=i, campaign_id=1, format="banner", w=300, h=250, markup="", adomain=("a.com",))
        for i in range(1, n + 1)
    ]


class Stats:
    def __init__(self, table: dict[int, tuple[int, int]]) -> None:
        self.table = table

    def stats(self, creative_id: int) -> tuple[int, int] | None:
        return self.table.get(creative_id)


def test_thompson_sampling_favours_the_better_creative_without_starving_others() -> None:
    creatives = _creatives(3)
    perf = Stats({1: (10_000, 100), 2: (10_000, 200), 3: (0, 0)})  # 1 %, 2 %, new
    rng = random.Random(11)
    counts = Counter(choose_creative(creatives, perf, rng).id for _ in range(5000))
    assert counts[2] > counts[1]
    assert counts[2] > 0.5 * 5000
    assert counts[3] > 50  # the new creative is still explored
    # with lots of evidence the clearly better one nearly always wins
    certain = Stats({1: (10**6, 10_000), 2: (10**6, 30_000)})
    wins = sum(choose_creative(creatives[:2], certain, rng).id == 2 for _ in range(1000))
    assert wins > 990


def test_thompson_sampling_with_identical_records_is_uniform_and_robust() -> None:
    creatives = _creatives(4)
    rng = random.Random(5)
    counts = Counter(choose_creative(creatives, NoPerformance(), rng).id for _ in range(8000))
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 1800
    odd = Stats({1: (5, 50), 2: (-3, 2)})  # more clicks than impressions, negative counts
    assert choose_creative(creatives[:2], odd, rng).id in {1, 2}
    assert choose_creative(creatives[:1], odd, rng).id == 1
    with pytest.raises(ValueError):
        choose_creative([], odd, rng)
