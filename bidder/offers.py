"""The per-candidate pricing loop of the bid path (``price_offers``): what each candidate the
internal auction reaches bids, with the pipeline's callbacks for what needs state. Which
candidates may bid is decided over arrays and lazily (``bidder.imp_offers``).

``bidder/_offers.pyx`` compiles the same function; this module is the reference and the
fallback when the extension is not built, and tests/bidder/test_bidder_offers.py checks that
both give the same offers, drops and gate questions. ``bidder.imp_offers`` calls
``price_offers`` from here: the compiled one when it is built.

Integers are micros CPM in the bidding currency; floors must be below ``MAX_MICROS`` (the
pipeline caps them there: no campaign's maximum bid comes near it), so that the compiled loops
can keep money in 64-bit integers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from bidder.auction import auction_weight
from bidder.pricing import MarketPriceModel, Priced, Shader, price
from bidder.scoring import values_cpm_micros
from bidder.targeting import Candidate
from fleet.config import Campaign

MAX_MICROS: Final = 1 << 62

# (candidate, creative position, floor, auction type, value, price, p_win, p_click, p_install,
# market segment) of one priced offer
OfferRow = tuple[Candidate, int, int, int, int, int, float, float, float, str]
# the market segment of an auction type and its log-normal (mu, sigma) when the model has one
Segment = tuple[str, tuple[float, float] | None]


class Chosen:
    """Candidates of one imp to price, column by column."""

    __slots__ = ("auction_types", "candidates", "floors", "positions")

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self.positions: list[int] = []  # the creative each shows
        self.floors: list[int] = []
        self.auction_types: list[int] = []


def python_price_offers(
    chosen: Chosen,
    predictions: Sequence[tuple[float, float]],
    segment_of: Callable[[int], Segment],
    limit: int,
    margin: float,
    min_bid: int,
    market: MarketPriceModel,
    shader: Shader,
    allow: Callable[[Campaign, int, float, float], bool],
    wallclock: float,
    drops: dict[str, int],
    campaign_ids: list[int],
    weights: list[float],
    rows: list[OfferRow],
) -> None:
    """Price the chosen candidates in decreasing order of value (ties in their order) until
    ``limit`` offers have survived pricing (``bidder.pricing.price``) and the spend gate
    (``allow``, asked with the bid in the campaign's currency, the time and the bid's P(win)),
    appending each survivor's
    campaign id, auction weight and row; the others are counted in ``drops``.

    The top-K cap is a deliberate approximation of the internal auction: an offer's weight
    P(win) x (value - price) is at most its value and grows with it, so the best values are
    priced first. ``segment_of`` gives an auction type's market segment (asked once per type).
    """
    goals = [(c.entry.campaign.goal_type, c.entry.goal_price_micros) for c in chosen.candidates]
    values = values_cpm_micros(goals, predictions)
    order = sorted(range(len(values)), key=values.__getitem__, reverse=True)
    segments: dict[int, Segment] = {}
    offered = 0
    for k in order:
        if offered >= limit:
            break
        cand = chosen.candidates[k]
        floor, auction_type, value = chosen.floors[k], chosen.auction_types[k], values[k]
        e = cand.entry
        segment = segments.get(auction_type)
        if segment is None:
            segment = segments[auction_type] = segment_of(auction_type)
        priced = price(
            value,
            floor,
            e.max_bid_micros,
            auction_type,
            margin,
            min_bid,
            market,
            segment[0],
            segment[1],
            shader,
        )
        if not isinstance(priced, Priced):
            drops[priced] = drops.get(priced, 0) + 1
            continue
        campaign = e.campaign
        bid = priced.price
        if not allow(campaign, e.to_campaign_currency(bid), wallclock, priced.p_win):
            drops["paced"] = drops.get("paced", 0) + 1
            continue
        p_click, p_install = predictions[k]
        campaign_ids.append(campaign.id)
        weights.append(auction_weight(priced.p_win, value, bid))
        rows.append(
            (
                cand,
                chosen.positions[k],
                floor,
                auction_type,
                value,
                bid,
                priced.p_win,
                p_click,
                p_install,
                segment[0],
            )
        )
        offered += 1


# The compiled twins when built (the same results: tests/bidder/test_bidder_offers.py).
try:
    from bidder._offers import price_offers
except ImportError:  # pragma: no cover - the extension is built by `make`
    price_offers = python_price_offers

__all__ = [
    "MAX_MICROS",
    "Chosen",
    "OfferRow",
    "Segment",
    "price_offers",
    "python_price_offers",
]
