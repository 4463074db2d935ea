"""The eligible-opportunity columns of an auction event: the counts a dictionary of campaign
id -> candidates would hold, in the order of first appearance."""

from __future__ import annotations

import random

import numpy as np

from bidder.outcome import opportunity_columns


def _reference(per_imp: list[list[int]]) -> tuple[list[int], list[int]]:
    counts: dict[int, int] = {}
    for ids in per_imp:
        for cid in ids:
            counts[cid] = counts.get(cid, 0) + 1
    return list(counts), list(counts.values())


def test_columns_equal_the_dictionary_counts() -> None:
    rng = random.Random(4)
    cases: list[list[list[int]]] = [[], [[]], [[], []], [[5]], [[9, 3, 7]], [[], [4, 2]]]
    for _ in range(200):
        imps = rng.randint(1, 4)
        cases.append([rng.sample(range(1, 60), rng.randint(0, 20)) for _ in range(imps)])
    for per_imp in cases:
        arrays = [np.asarray(ids, dtype=np.int64) for ids in per_imp]
        campaigns, counts = opportunity_columns(arrays)
        assert (campaigns, counts) == _reference(per_imp), per_imp
        assert all(type(x) is int for x in campaigns + counts)
