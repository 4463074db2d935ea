"""A configuration snapshot made ready for the bid path: the targeting index and, by creative
position, its campaign's goal and what the pipeline's model scores it with.

``compile_index`` builds it for a new index, keeping what an incremental update
(``bidder.index_update``) left in place: the arrays and feature tables of the positions of the
old index are reused, the positions after them appended. ``with_model`` gives the same index
scored with another model. Both run off the event loop (``Pipeline.set_snapshot`` may run in a
worker thread).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from bidder.bounds import GOAL_CODES, GOAL_NAMES, ShapeTops
from bidder.scorer import (
    PositionTables,
    Scorer,
    StaticScorer,
    position_scorer,
    static_rates,
)
from bidder.scoring import (
    HashedLinearModel,
    Model,
    StaticModel,
    cross_prefixes,
    static_features,
)
from bidder.targeting import TargetingIndex
from fleet.config import Campaign, Creative

# the features of a dead position (hashed, never scored): as many as a live one's
_DEAD_STATIC: Final = ("",) * 6
_DEAD_PREFIXES: Final = ("",) * 7


@dataclass(frozen=True, slots=True)
class Compiled:
    """A snapshot made ready for the bid path: the index and, by creative position, its
    campaign's goal (code and price in the bidding currency) and the hashed feature tables."""

    index: TargetingIndex
    goal_codes: npt.NDArray[np.int8]
    goal_prices: npt.NDArray[np.int64]
    tables: PositionTables | None  # hashed with the model's seed, for hashed linear models
    # for the pipeline's model, when it is a hashed linear one or a static one (the priors)
    scorer: Scorer | None
    # the scorer's largest rows per run of each imp shape seen (``bidder.bounds``)
    shapes: ShapeTops = field(default_factory=ShapeTops)


@dataclass(frozen=True, slots=True)
class Fresh:
    """The positions of a new index that an old compiled one does not cover yet."""

    goal_codes: npt.NDArray[np.int8]
    goal_prices: npt.NDArray[np.int64]
    statics: list[tuple[str, ...]]
    prefixes: list[tuple[str, ...]]


def fresh_positions(index: TargetingIndex, old: Compiled | None) -> Fresh:
    """The goals and feature strings of the positions of ``index`` after those of ``old``
    (all of them without one), the goal arrays already joined to the old ones."""
    start = len(old.index.creatives) if old is not None else 0
    codes, prices = [], []
    statics: list[tuple[str, ...]] = []
    prefixes: list[tuple[str, ...]] = []
    # the new positions, in position order (an entry's number says nothing of it)
    fresh = sorted(
        (e for e in index.entries if e.first_creative >= start), key=lambda e: e.first_creative
    )
    for e in fresh:
        k = len(e.creatives)
        codes += [GOAL_CODES.get(e.campaign.goal_type, 2)] * k
        prices += [e.goal_price_micros] * k
        for cr in e.creatives:
            statics.append(static_features(e.campaign, cr))
            prefixes.append(cross_prefixes(e.campaign, cr))
    goal_codes = np.asarray(codes, dtype=np.int8)
    goal_prices = np.asarray(prices, dtype=np.int64)
    if old is not None:
        goal_codes = np.concatenate([old.goal_codes, goal_codes])
        goal_prices = np.concatenate([old.goal_prices, goal_prices])
    return Fresh(goal_codes, goal_prices, statics, prefixes)


def compile_index(
    index: TargetingIndex, old: Compiled | None, fresh: Fresh, model: Model
) -> Compiled:
    """``index`` compiled for ``model``, reusing the tables of ``old`` (whose positions
    ``index`` keeps) where they fit the model."""
    old_tables = old.tables if old is not None else None

    def tables_for() -> PositionTables | None:
        if not isinstance(model, HashedLinearModel):
            return None
        if old_tables is not None and old_tables.seed == model.seed:
            return old_tables.extended(fresh.statics, fresh.prefixes)
        if old is None:
            return PositionTables(fresh.statics, fresh.prefixes, model.seed)
        return position_tables(index, model.seed)

    def scorer_for(tables: PositionTables | None) -> Scorer | None:
        if not isinstance(model, StaticModel):
            return position_scorer(model, tables)
        kept = old.scorer if old is not None else None
        if isinstance(kept, StaticScorer) and kept.model is model:
            return kept.extended(fresh.statics)
        if old is None:
            return StaticScorer(model, static_rates(model, fresh.statics))
        return static_scorer(index, model)

    tables = tables_for()
    return Compiled(index, fresh.goal_codes, fresh.goal_prices, tables, scorer_for(tables))


def with_model(compiled: Compiled, model: Model) -> Compiled:
    """The same index scored with ``model`` (tables rehashed only for another seed)."""
    tables = compiled.tables
    if isinstance(model, HashedLinearModel) and (tables is None or tables.seed != model.seed):
        tables = position_tables(compiled.index, model.seed)
    scorer: Scorer | None = (
        static_scorer(compiled.index, model)
        if isinstance(model, StaticModel)
        else position_scorer(model, tables)
    )
    return dataclasses.replace(compiled, tables=tables, scorer=scorer, shapes=ShapeTops())


def by_position(index: TargetingIndex) -> list[tuple[Campaign, Creative] | None]:
    """Every position of the index with its campaign, in position order; None for the dead
    ones, left behind by incremental updates (no entry holds them any more, and no
    candidate reaches them)."""
    out: list[tuple[Campaign, Creative] | None] = [None] * len(index.creatives)
    for e in index.entries:
        for k, cr in enumerate(e.creatives):
            out[e.first_creative + k] = (e.campaign, cr)
    return out


def position_tables(index: TargetingIndex, seed: int) -> PositionTables:
    """The index's positions hashed for scoring (the strings are not kept)."""
    pairs = by_position(index)
    statics = [_DEAD_STATIC if p is None else static_features(*p) for p in pairs]
    prefixes = [_DEAD_PREFIXES if p is None else cross_prefixes(*p) for p in pairs]
    return PositionTables(statics, prefixes, seed)


def static_scorer(index: TargetingIndex, model: StaticModel) -> StaticScorer:
    """The predictions of a static model (the priors) for every position of the index."""
    statics: Sequence[tuple[str, ...]] = [
        _DEAD_STATIC if p is None else static_features(*p) for p in by_position(index)
    ]
    return StaticScorer(model, static_rates(model, statics))


__all__ = [
    "GOAL_CODES",
    "GOAL_NAMES",
    "Compiled",
    "Fresh",
    "by_position",
    "compile_index",
    "fresh_positions",
    "position_tables",
    "static_scorer",
    "with_model",
]
