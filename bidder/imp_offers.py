"""One imp's offers: which candidates may bid, their value bounds, and pricing only as far as
the internal auction needs (``bidder.race``), so that the winner (and the RNG's state) is the one
of pricing every candidate. ``Pipeline`` calls ``imp_offers`` once per imp with candidates."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

import numpy as np
import numpy.typing as npt

from bidder.auction import Offer
from bidder.bounds import (
    RunValues,
    best_values,
    bound_terms,
    entry_bounds,
    floor_survivors,
    imp_bounds,
    weight_bounds,
)
from bidder.candidates import CandidateSet
from bidder.compiled import GOAL_NAMES, Compiled
from bidder.offers import Chosen, OfferRow, Segment, price_offers
from bidder.openrtb import Deal, Imp
from bidder.options import PipelineSettings
from bidder.pricing import MarketPriceModel, Shader, market_params
from bidder.race import draw_key, race
from bidder.scoring import (
    Model,
    cross_pairs,
    cross_prefixes,
    cross_suffixes,
    inventory_key,
    predict_crossed,
    request_features,
    static_features,
    values_cpm_micros,
)
from bidder.targeting import RequestView
from fleet.config import Campaign

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Positions = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Bidding:
    """What pricing an imp needs of the pipeline: its settings, state and callbacks."""

    settings: PipelineSettings
    model: Model
    market: MarketPriceModel
    shader: Shader
    rng: random.Random
    allow: Callable[[Campaign, int, float, float], bool]  # the spend gate (price, now, p_win)
    deal_floor: Callable[[Deal], int | None]  # a deal's floor in the bidding currency
    capped: Callable[[Campaign], str]  # why a capped campaign may not bid ("" if it may)
    # the creative among several (by position), from a 64-bit value drawn for the candidate
    choose: Callable[[Sequence[int], int], int]
    lazy: bool = True  # caps and creatives only for the candidates the race reaches


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
        crossed = cross_pairs(prefixes, self.suffixes)
        return [*self.shared, *static, *crossed]


def imp_offers(
    b: Bidding,
    compiled: Compiled,
    imp: Imp,
    imp_floor: int,
    cands: CandidateSet,
    won: set[int],
    view: RequestView,
    request_at: int,
    wallclock: float,
    drops: dict[str, int],
) -> tuple[ImpOffers, bool]:
    """The imp's priced offers and the winner of its internal auction (``bidder.race``).

    Over the columns of all candidates (``cands``): the floors (a deal's own), the maximum
    bid against them, and an upper bound of each survivor's value over all its creatives. Then
    the race takes candidates in the order of those bounds, and only for those it reaches are
    the frequency caps read, the creative chosen (a draw keyed by the candidate,
    ``bidder.race.draw_key``), the rates predicted and the bid priced. So the winner, and the
    RNG's state, are those of doing it all for every candidate (``b.lazy`` False does the
    caps and creatives of all first; with ``early_stop`` off it prices all too: the reference).

    Drops are counted in ``drops`` (caps only for the candidates reached: all of them when no
    candidate can win); the flag says the race's safety net (``max_priced_per_imp``) stopped
    it."""
    s = b.settings
    out = ImpOffers(imp, compiled)
    floors, types = _floors(cands, imp_floor, request_at, b.deal_floor, drops)
    # a surviving bid is at least its floor, the minimum bid and 1 micro
    low_min = max(s.min_bid_cpm_micros, 1)
    scorer = compiled.scorer
    shared = request_features(view, imp)
    suffixes = cross_suffixes(view, inventory_key(view))  # the request's crosses bound its sums
    bounds: F64 | None = None
    if scorer is not None and cands.runs is not None and cands.rows is not None:
        # floors, lowest bids and weight bounds in one pass over the runs of the imp's shape
        z0 = scorer.shared_sum(shared)
        terms = bound_terms(scorer, z0, len(suffixes))
        assert cands.shape is not None
        tops = compiled.shapes.get(
            cands.shape, cands.runs, terms, compiled.goal_codes, compiled.goal_prices
        )
        kept, lows, bounds, below = entry_bounds(
            cands.rows, cands.max_bids, floors, terms, tops, low_min
        )
    elif scorer is not None:  # the same over each candidate's positions (deals)
        z0 = scorer.shared_sum(shared)
        kept, lows, bounds, below = imp_bounds(
            cands.flat,
            cands.starts,
            cands.max_bids,
            floors,
            bound_terms(scorer, z0, len(suffixes)),
            compiled.goal_codes,
            compiled.goal_prices,
            low_min,
        )
    else:  # no bounds of the rates: every survivor is scored, bounds from exact values
        z0 = (0.0, 0.0)
        kept, lows, below = floor_survivors(cands.max_bids, floors, low_min)
    if below or cands.deals:
        drops["floor"] = drops.get("floor", 0) + below
    n = len(kept)
    if not n:
        return out, False
    seed = b.rng.getrandbits(64)  # the draw's one random number
    out.shared, out.suffixes = shared, suffixes
    shown: list[int] = [_UNSEEN] * n  # the creative position of each, once chosen
    reached = [0]  # how many have a creative chosen or a cap found (``shown`` not _UNSEEN)
    predictions: dict[int, tuple[float, float]] = {}
    goal_codes, goal_prices = compiled.goal_codes, compiled.goal_prices
    by_runs: RunValues | None = None  # the refined bounds of candidates that are runs
    if scorer is not None and cands.runs is not None and cands.rows is not None:
        by_runs = RunValues(
            scorer, z0, suffixes, cands.runs, cands.rows[kept], lows, goal_codes, goal_prices
        )

    def reach(js: list[int]) -> list[int]:
        """Caps and creative of those not reached yet; those that may bid, in order."""
        for j in js:
            if shown[j] != _UNSEEN:
                continue
            k = int(kept[j])
            cand = cands.get(k)
            reached[0] += 1
            if cands.is_capped(k):
                why = b.capped(cand.entry.campaign)
                if why:
                    drops[why] = drops.get(why, 0) + 1
                    shown[j] = _CAPPED
                    continue
            positions = cand.positions
            many = len(positions) > 1
            shown[j] = b.choose(positions, draw_key(seed, j)) if many else positions[0]
        return [j for j in js if shown[j] >= 0]

    def predict(js: list[int]) -> None:
        missing = [j for j in js if j not in predictions]
        if not missing:
            return
        if scorer is not None:
            at = np.asarray([shown[j] for j in missing], dtype=np.intp)
            got = scorer.score(z0, at, list(suffixes)).tolist()
        else:
            campaigns = [cands.get(int(kept[j])).entry.campaign for j in missing]
            at_list = [shown[j] for j in missing]
            got = _predict(b.model, compiled, campaigns, at_list, shared, suffixes)
        for j, (pc, pi) in zip(missing, got, strict=True):
            predictions[j] = (pc, pi)

    def refine(js: list[int]) -> list[float]:
        """Weight bounds from exact values (the largest value less the lowest surviving
        bid): for the candidates reached already, of the creative chosen (0 if capped);
        for the others, the largest over every creative they may show, scored in one
        compiled pass, so that caps are read and creatives chosen only for those the race
        goes on to price."""
        if scorer is None:
            return exact_refine(js)
        if by_runs is not None and not reached[0]:  # nothing priced yet: the usual case
            return by_runs(js)
        done = [j for j in js if shown[j] != _UNSEEN]
        pending = js
        if done:
            known = dict(zip(done, exact_refine(done), strict=True))
            pending = [j for j in js if shown[j] == _UNSEEN]
            if not pending:
                return [known[j] for j in js]
        if by_runs is not None:  # the runs of the imp's shape, in one compiled pass
            tight = by_runs(pending)
        else:
            flat, starts = creatives_of(pending)
            scored = scorer.score(z0, flat, list(suffixes))
            tight = best_values(
                scored, flat, starts, goal_codes, goal_prices, lows[pending]
            ).tolist()
        if not done:
            return tight
        got = dict(zip(pending, tight, strict=True))
        return [got[j] if j in got else known[j] for j in js]

    def creatives_of(js: list[int]) -> tuple[Positions, Positions]:
        """The positions survivors ``js`` may show (deals: no runs of a shape), one after
        the other, and where each one's begin (the end last)."""
        pieces = [np.asarray(cands.get(int(kept[j])).positions, np.intp) for j in js]
        ends = accumulate(map(len, pieces), initial=0)
        starts = np.fromiter(ends, dtype=np.intp, count=len(js) + 1)
        return np.concatenate(pieces).astype(np.intp, copy=False), starts

    def exact_refine(js: list[int]) -> list[float]:
        """Weight bounds from the exact values (value - the lowest surviving bid) of the
        creative each shows; 0 for a capped campaign."""
        live = reach(js)
        predict(live)
        goals = [(GOAL_NAMES[goal_codes[shown[j]]], int(goal_prices[shown[j]])) for j in live]
        values = values_cpm_micros(goals, [predictions[j] for j in live])
        exact = {j: float(max(v - int(lows[j]), 0)) for v, j in zip(values, live, strict=True)}
        return [exact.get(j, 0.0) for j in js]

    if not b.lazy:
        reach(list(range(n)))
    refiner: Callable[[list[int]], list[float]] | None = refine
    if bounds is None:
        bounds = np.asarray(exact_refine(list(range(n))), dtype=np.float64)
        refiner = None
    market = b.market
    row_of: dict[int, int] = {}  # candidate -> its row in ``out``

    def segment_of(auction_type: int) -> Segment:
        name = market_segment(view, imp, auction_type)
        return name, market_params(market, name)

    def price(js: list[int]) -> list[float | None]:
        live = reach(js)
        predict(live)
        some = Chosen()
        for j in live:
            k = int(kept[j])
            some.candidates.append(cands.get(k))
            some.positions.append(shown[j])
            some.floors.append(int(floors[k if len(floors) > 1 else 0]))
            some.auction_types.append(request_at if types is None else types.get(k, request_at))
        first = len(out.rows)
        slot_of = {id(cands.get(int(kept[j]))): j for j in live}  # rows come in value order
        price_offers(
            some,
            [predictions[j] for j in live],
            segment_of,
            len(live),
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
        seed,
        bounds,
        price,
        refine=refiner,
        excluded=_excluded(cands.campaign_ids[kept], won) if won else None,
        limit=s.max_priced_per_imp,
        early=s.early_stop,
    )
    out.priced = result.priced
    if result.winner is not None:
        out.winner = row_of[result.winner]
    return out, result.capped


_UNSEEN: Final = -2  # the race has not reached the candidate yet
_CAPPED: Final = -1  # a frequency cap (or what else ``Bidding.capped`` says) keeps it out


def _floors(
    cands: CandidateSet,
    imp_floor: int,
    request_at: int,
    deal_floor: Callable[[Deal], int | None],
    drops: dict[str, int],
) -> tuple[I64, dict[int, int] | None]:
    """Each candidate's floor (a deal's own; -1 for a deal floor in an unknown currency,
    counted in ``drops``; one value for all of a set over runs without deals) and, when some
    deal says so, the auction types that differ from the request's, by candidate."""
    if not cands.deals:  # one floor for all: one value, read for candidate k as floors[0]
        return np.full(1 if cands.runs is not None else len(cands), imp_floor, np.int64), None
    floors = np.full(len(cands), imp_floor, dtype=np.int64)
    types: dict[int, int] = {}
    for k in range(len(cands)):
        deal = cands.get(k).deal
        if deal is None:
            continue
        if deal.bidfloor > 0:
            converted = deal_floor(deal)
            if converted is None:
                drops["currency"] = drops.get("currency", 0) + 1
                floors[k] = -1
                continue
            floors[k] = converted
        if deal.at is not None:
            types[k] = deal.at
    return floors, types


def _excluded(ids: I64, won: set[int]) -> Callable[[int], bool]:
    """Whether survivor j's campaign (``ids[j]``) won an earlier imp of the request."""
    return lambda j: int(ids[j]) in won


def _predict(
    model: Model,
    compiled: Compiled,
    campaigns: list[Campaign],
    positions: list[int],
    shared: list[str],
    suffixes: tuple[str, ...],
) -> list[tuple[float, float]]:
    """Predictions of a model without a position scorer, from feature strings."""
    creatives = compiled.index.creatives
    statics, prefixes = [], []
    for campaign, pos in zip(campaigns, positions, strict=True):
        creative = creatives[pos]
        statics.append(static_features(campaign, creative))
        prefixes.append(cross_prefixes(campaign, creative))
    return predict_crossed(model, shared, statics, prefixes, suffixes)


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
