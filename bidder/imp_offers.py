"""One imp's offers: which candidates may bid, their value bounds, and pricing only as far as
the internal auction needs (``bidder.race``), so that the winner (and the RNG's state) is the one
of pricing every candidate. ``Pipeline`` calls ``imp_offers`` once per imp with candidates."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bidder.auction import Offer
from bidder.compiled import GOAL_NAMES, Compiled
from bidder.offers import Chosen, OfferRow, Segment, price_offers, select
from bidder.openrtb import Deal, Imp
from bidder.options import PipelineSettings
from bidder.pricing import MarketPriceModel, Shader, market_params
from bidder.race import exponentials, race
from bidder.scoring import (
    Model,
    cross_prefixes,
    cross_suffixes,
    inventory_key,
    predict_crossed,
    request_features,
    static_features,
    values_cpm_micros,
)
from bidder.targeting import Candidate, RequestView
from fleet.config import Campaign


@dataclass(frozen=True, slots=True)
class Bidding:
    """What pricing an imp needs of the pipeline: its settings, state and callbacks."""

    settings: PipelineSettings
    model: Model
    market: MarketPriceModel
    shader: Shader
    rng: random.Random
    allow: Callable[[Campaign, int, float], bool]  # the spend gate
    deal_floor: Callable[[Deal], int | None]  # a deal's floor in the bidding currency
    capped: Callable[[Campaign], str]  # why a capped campaign may not bid ("" if it may)
    choose: Callable[[list[int]], int]  # the creative among several, by position


class ImpOffers:
    """The priced candidates of one imp, column by column; an Offer is built for winners only."""

    __slots__ = (
        "campaign_ids",
        "compiled",
        "imp",
        "priced",
        "rows",
        "shared",
        "suffixes",
        "weights",
        "winner",
    )

    def __init__(self, imp: Imp, compiled: Compiled) -> None:
        self.imp = imp
        self.compiled = compiled
        self.campaign_ids: list[int] = []
        self.weights: list[float] = []
        self.rows: list[OfferRow] = []  # in the order of the two columns above
        self.shared: list[str] = []
        self.suffixes: tuple[str, ...] = ()
        self.winner: int | None = None  # the row that won the internal auction
        self.priced = 0  # candidates priced

    def offer(self, k: int) -> Offer:
        cand, pos, floor, auction_type, value, bid, p_win, p_click, p_install, segment = self.rows[
            k
        ]
        return Offer(
            imp=self.imp,
            entry=cand.entry,
            creative=self.compiled.index.creatives[pos],
            price=bid,
            value=value,
            floor=floor,
            p_win=p_win,
            p_click=p_click,
            p_install=p_install,
            auction_type=auction_type,
            deal=cand.deal,
            features=self.features(k),
            segment=segment,
        )

    def features(self, k: int) -> list[str]:
        """What the k-th offer was scored on: shared, static, then the crosses."""
        cand, pos = self.rows[k][0], self.rows[k][1]
        campaign, creative = cand.entry.campaign, self.compiled.index.creatives[pos]
        static, prefixes = static_features(campaign, creative), cross_prefixes(campaign, creative)
        crossed = [p + x for p, x in zip(prefixes, self.suffixes, strict=True)]
        return [*self.shared, *static, *crossed]


def imp_offers(
    b: Bidding,
    compiled: Compiled,
    imp: Imp,
    imp_floor: int,
    candidates: list[Candidate],
    won: set[int],
    view: RequestView,
    request_at: int,
    wallclock: float,
    drops: dict[str, int],
) -> tuple[ImpOffers, bool]:
    """The imp's priced offers and the winner of its internal auction (``bidder.race``):
    candidates are bounded first, scored and priced only while they can still win, so
    the winner (and the RNG's state) is the one of pricing every candidate. Drops are counted
    in ``drops``; the flag says the race's safety net (``max_priced_per_imp``) stopped it."""
    s = b.settings
    out = ImpOffers(imp, compiled)
    chosen = Chosen()
    select(
        candidates,
        imp_floor,
        request_at,
        b.deal_floor,
        b.capped,
        b.choose,
        drops,
        chosen,
    )
    n = len(chosen.candidates)
    if not n:
        return out, False
    exps = exponentials(b.rng.getrandbits(64), n)  # the draw's one random number
    shared = request_features(view, imp)
    suffixes = cross_suffixes(view, inventory_key(view))
    out.shared, out.suffixes = shared, suffixes
    positions = np.asarray(chosen.positions, dtype=np.intp)
    # a surviving bid is at least its floor, the minimum bid and 1 micro
    lows = np.maximum(np.asarray(chosen.floors, dtype=np.int64), max(s.min_bid_cpm_micros, 1))
    goal_codes = compiled.goal_codes[positions]
    goal_prices = compiled.goal_prices[positions]
    predictions: dict[int, tuple[float, float]] = {}
    scorer = compiled.scorer

    def predict(js: list[int]) -> None:
        missing = [j for j in js if j not in predictions]
        if not missing:
            return
        if scorer is not None:
            got = scorer.score(z0, positions[missing], list(suffixes)).tolist()
        else:
            got = _predict(b.model, compiled, chosen, missing, shared, suffixes)
        for j, (pc, pi) in zip(missing, got, strict=True):
            predictions[j] = (pc, pi)

    def refine(js: list[int]) -> list[float]:
        """Weight bounds from the exact values: value - the lowest surviving bid."""
        predict(js)
        goals = [(GOAL_NAMES[goal_codes[j]], int(goal_prices[j])) for j in js]
        values = values_cpm_micros(goals, [predictions[j] for j in js])
        return [float(max(v - int(lows[j]), 0)) for v, j in zip(values, js, strict=True)]

    if scorer is not None:
        z0 = scorer.shared_sum(shared)
        bounds = weight_bounds(goal_codes, goal_prices, scorer.bound(z0, positions), lows)
        refiner = refine
    else:  # no bounds of the rates: every candidate scored, bounds from exact values
        z0 = (0.0, 0.0)
        bounds = np.asarray(refine(list(range(n))), dtype=np.float64)
        refiner = None
    market = b.market
    row_of: dict[int, int] = {}  # candidate -> its row in ``out``

    def segment_of(auction_type: int) -> Segment:
        name = market_segment(view, imp, auction_type)
        return name, market_params(market, name)

    def price(js: list[int]) -> list[float | None]:
        predict(js)
        some = Chosen()
        for j in js:
            some.candidates.append(chosen.candidates[j])
            some.positions.append(chosen.positions[j])
            some.floors.append(chosen.floors[j])
            some.auction_types.append(chosen.auction_types[j])
        first = len(out.rows)
        slot_of = {id(chosen.candidates[j]): j for j in js}  # rows come in value order
        price_offers(
            some,
            [predictions[j] for j in js],
            segment_of,
            len(js),
            s.margin,
            s.min_bid_cpm_micros,
            market,
            b.shader,
            b.allow,
            wallclock,
            drops,
            out.campaign_ids,
            out.weights,
            out.rows,
        )
        weights: dict[int, float] = {}
        for r in range(first, len(out.rows)):
            j = slot_of[id(out.rows[r][0])]
            row_of[j] = r
            weights[j] = out.weights[r]
        return [weights.get(j) for j in js]

    result = race(
        exps,
        bounds,
        price,
        refine=refiner,
        excluded=lambda j: chosen.candidates[j].entry.campaign.id in won,
        limit=s.max_priced_per_imp,
        early=s.early_stop,
    )
    out.priced = result.priced
    if result.winner is not None:
        out.winner = row_of[result.winner]
    return out, result.capped


def _predict(
    model: Model,
    compiled: Compiled,
    chosen: Chosen,
    js: list[int],
    shared: list[str],
    suffixes: tuple[str, ...],
) -> list[tuple[float, float]]:
    """Predictions of a model without a position scorer, from feature strings."""
    creatives = compiled.index.creatives
    statics, prefixes = [], []
    for j in js:
        campaign, creative = chosen.candidates[j].entry.campaign, creatives[chosen.positions[j]]
        statics.append(static_features(campaign, creative))
        prefixes.append(cross_prefixes(campaign, creative))
    return predict_crossed(model, shared, statics, prefixes, suffixes)


def weight_bounds(
    goal_codes: npt.NDArray[np.int8],
    goal_prices: npt.NDArray[np.int64],
    rates: npt.NDArray[np.float64],
    lows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Upper bounds of the auction weights, from upper bounds of (p_click, p_install): the
    value ``bidder.scoring.value_cpm_micros`` computes from those (the same float operations,
    monotone in the rates) + 1, less the lowest surviving bid; 0 when not positive."""
    p_click = rates[:, 0]
    p = np.where(goal_codes == 1, p_click, p_click * rates[:, 1])
    scaled = goal_prices.astype(np.float64) * np.minimum(p, 1.0) * 1000.0
    values = np.where(goal_codes == 0, goal_prices, scaled.astype(np.int64) + 1)
    bounds: npt.NDArray[np.float64] = np.maximum(values - lows, 0).astype(np.float64)
    return bounds


def market_segment(view: RequestView, imp: Imp, auction_type: int) -> str:
    """The market-price segment of an imp: auction type, exchange, country and format."""
    if imp.banner is not None:
        b = imp.banner
        if b.w and b.h:
            fmt = f"{b.w}x{b.h}"
        elif b.format and b.format[0].w and b.format[0].h:
            fmt = f"{b.format[0].w}x{b.format[0].h}"
        else:
            fmt = "banner"
    elif imp.video is not None:
        fmt = "video"
    elif imp.native is not None:
        fmt = "native"
    else:
        fmt = "other"
    return f"{auction_type}|{view.exchange}|{view.country}|{fmt}"


__all__ = ["Bidding", "ImpOffers", "imp_offers", "market_segment", "weight_bounds"]
