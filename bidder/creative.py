"""Which creative a campaign shows: Thompson sampling on each creative's click record.

Every eligible creative gets a draw from its Beta posterior of the click rate (a prior worth
``prior_clicks`` clicks in ``prior_clicks + prior_misses`` impressions, plus what it has done);
the highest draw wins. Better performers win more often, new ones still get their chance.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from fleet.config import Creative


class CreativePerformance(Protocol):
    def stats(self, creative_id: int) -> tuple[int, int] | None:
        """(impressions, clicks) so far, or None when nothing is known."""
        ...


class NoPerformance:
    """No history: every creative is drawn from the prior alone."""

    def stats(self, creative_id: int) -> tuple[int, int] | None:
        return None


def choose_creative(
    creatives: Sequence[Creative],
    performance: CreativePerformance,
    rng: random.Random,
    prior_clicks: float = 1.0,
    prior_misses: float = 99.0,
) -> Creative:
    return creatives[choose_creative_index(creatives, performance, rng, prior_clicks, prior_misses)]


def choose_creative_index(
    creatives: Sequence[Creative],
    performance: CreativePerformance,
    rng: random.Random,
    prior_clicks: float = 1.0,
    prior_misses: float = 99.0,
) -> int:
    """The position in ``creatives`` of the one to show (``choose_creative`` without looking
    the winner up again)."""
    n = len(creatives)
    if n == 1:
        return 0
    if n == 0:
        raise ValueError("no creative to choose from")
    stats = performance.stats
    records = [stats(cr.id) or (0, 0) for cr in creatives]
    if records.count(records[0]) == n:  # identical posteriors: every creative equally likely
        return min(int(rng.random() * n), n - 1)
    best = 0
    best_draw = -1.0
    for k, (imps, clicks) in enumerate(records):
        imps = max(imps, 0)
        clicks = max(0, min(clicks, imps))
        draw = rng.betavariate(prior_clicks + clicks, prior_misses + imps - clicks)
        if draw > best_draw:
            best, best_draw = k, draw
    return best
