"""The internal auction: which of our own campaigns bids on each imp.

The winner is drawn at random with weight P(win | price) x (value - price): the expected profit
of the bid. The best bid wins most often, yet a weaker campaign still wins now and then, so it is
never starved of the impressions its pacing and learning need. One bid per imp (we are one seat);
with several imps, a campaign wins at most one of them per request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from bidder.openrtb import Deal, Imp
from bidder.targeting import Entry
from fleet.config import Creative


@dataclass(slots=True)
class Offer:
    """A priced candidate for one imp."""

    imp: Imp
    entry: Entry
    creative: Creative
    price: int  # micros CPM, bidding currency
    value: int  # micros CPM, bidding currency
    floor: int
    p_win: float
    p_click: float
    p_install: float
    auction_type: int
    deal: Deal | None = None
    features: list[str] = field(default_factory=list)  # every feature scored
    segment: str = ""  # market-price segment

    @property
    def weight(self) -> float:
        return auction_weight(self.p_win, self.value, self.price)


def auction_weight(p_win: float, value: int, price: int) -> float:
    """Expected profit of a bid: P(win | price) x (value - price), 0 when there is none."""
    gain = value - price
    if gain <= 0 or not p_win > 0.0:
        return 0.0
    return p_win * gain


def draw(weights: Sequence[float], rng: random.Random) -> int | None:
    """An index drawn with probability proportional to its weight; uniformly when every
    weight is 0 (nothing known about the market yet). None for no weights."""
    n = len(weights)
    if n == 0:
        return None
    if n == 1:
        return 0
    total = sum(weights)
    if not total > 0.0:
        return min(int(rng.random() * n), n - 1)
    r = rng.random() * total
    acc = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w > 0.0:
            acc += w
            last = i
            if r < acc:
                return i
    return last  # r landed on the rounding error past the end


def run(
    imps: Sequence[tuple[Sequence[int], Sequence[float]]], rng: random.Random
) -> list[int | None]:
    """For each imp, given its offers' campaign ids and weights, the index of the winning
    offer (None when it has none left): a campaign wins at most one imp per request."""
    won: set[int] = set()
    winners: list[int | None] = []
    for campaign_ids, weights in imps:
        if won:
            open_ = [i for i, c in enumerate(campaign_ids) if c not in won]
            k = draw([weights[i] for i in open_], rng)
            choice = open_[k] if k is not None else None
        else:
            choice = draw(weights, rng)
        if choice is not None:
            won.add(campaign_ids[choice])
        winners.append(choice)
    return winners
