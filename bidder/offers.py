"""The per-candidate loops of the bid path: which candidates of an imp may bid (``select``) and
what each of them bids (``price_offers``), with the pipeline's callbacks for what needs state.

These are the bid path's hottest loops (~30 candidates an imp), so ``bidder/_offers.pyx``
compiles the same two functions; this module is the reference and the fallback when the
extension is not built, and tests/bidder/test_bidder_offers.py checks that both give the same
offers, drops and draws. The pipeline calls ``select`` and ``price_offers`` from here: the
compiled ones when they are built.

Integers are micros CPM in the bidding currency; floors must be below ``MAX_MICROS`` (the
pipeline caps them there: no campaign's maximum bid comes near it), so that the compiled loops
can keep money in 64-bit integers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from bidder.auction import auction_weight
from bidder.openrtb import Deal
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
    """The candidates of one imp left after ``select``, column by column."""

    __slots__ = ("auction_types", "candidates", "floors", "positions")

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self.positions: list[int] = []  # the creative each shows
        self.floors: list[int] = []
        self.auction_types: list[int] = []


def python_select(
    candidates: Sequence[Candidate],
    imp_floor: int,
    request_at: int,
    deal_floor: Callable[[Deal], int | None],
    capped: Callable[[Campaign], str],
    choose: Callable[[list[int]], int],
    drops: dict[str, int],
    out: Chosen,
) -> None:
    """Append to ``out`` the candidates that may bid on the imp, each with its floor (a deal's
    own, converted by ``deal_floor``: None for an unknown currency), auction type (a deal's
    ``at`` wins) and creative (``choose`` picks among several, by position); count the others
    in ``drops`` by reason: "currency", "floor", or what ``capped`` says of a campaign with
    frequency caps ("" when it may bid)."""
    for cand in candidates:
        e = cand.entry
        deal = cand.deal
        floor, auction_type = imp_floor, request_at
        if deal is not None:
            if deal.bidfloor > 0:
                converted = deal_floor(deal)
                if converted is None:
                    drops["currency"] = drops.get("currency", 0) + 1
                    continue
                floor = converted
            if deal.at is not None:
                auction_type = deal.at
        if e.max_bid_micros < floor:
            drops["floor"] = drops.get("floor", 0) + 1
            continue
        if e.campaign.frequency_caps:
            why = capped(e.campaign)
            if why:
                drops[why] = drops.get(why, 0) + 1
                continue
        positions = cand.positions
        pos = positions[0] if len(positions) == 1 else choose(positions)
        out.candidates.append(cand)
        out.positions.append(pos)
        out.floors.append(floor)
        out.auction_types.append(auction_type)


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
    from bidder._offers import price_offers, select
except ImportError:  # pragma: no cover - the extension is built by `make`
    select, price_offers = python_select, python_price_offers

__all__ = [
    "MAX_MICROS",
    "Chosen",
    "OfferRow",
    "Segment",
    "price_offers",
    "python_price_offers",
    "python_select",
    "select",
]
