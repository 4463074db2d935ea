"""Over all candidates of an imp, before its internal auction: which survive their floor, the
lowest bid each may make, and an upper bound of each one's auction weight over all its
creatives (``bidder.race`` stops pricing with them).

A candidate's weight bound comes from the largest rate bounds of its creatives, by head (a value
grows with each rate), and its campaign's goal: for a hashed linear model the largest static
sum of its positions, the request's shared sum and the crosses' bound through the sigmoid
(``PositionScorer.bound``), for a static model (the priors) its positions' largest predictions;
then the value ``bidder.scoring.value_cpm_micros`` computes from those rates (the same float
operations, monotone in the rates) + 1, less the lowest surviving bid, at least 0. An install
goal's rate p_click x p_install is bounded with one sigmoid of the two heads' bounding sums,
s(a) s(b) <= s(a + b) since (1 + e^-a)(1 + e^-b) >= 1 + e^-(a+b): one exponential per candidate
instead of two, and within a few per cent of the product where rates are small.

``imp_bounds`` runs one compiled loop (``bidder._bounds.imp_bounds``); ``python_imp_bounds`` is
its reference over numpy arrays (tests/bidder/test_bidder_bounds.py compares both).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from bidder.candidates import ShapeRuns
from bidder.memo import BigKey
from bidder.scorer import SLACK, PositionScorer, Scorer, python_bound
from bidder.scoring import values_cpm_micros
from fleet.config import GoalType

_RunScorer: Callable[..., Callable[[list[int]], list[float]]] | None
try:
    from bidder._scorer import RunScorer as _CompiledRunScorer
    from bidder._scorer import bound as _bound

    _RunScorer = _CompiledRunScorer
except ImportError:  # pragma: no cover - the extension is built by `make`
    _bound, _RunScorer = python_bound, None

# goal types as codes, for the value bounds computed over arrays
GOAL_CODES: Final = {"CPM": 0, "CPC": 1, "CPI": 2, "CPA": 2}
GOAL_NAMES: Final[tuple[GoalType, ...]] = ("CPM", "CPC", "CPI")  # CPI and CPA: the same value

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Positions = npt.NDArray[np.intp]


class BoundTerms(NamedTuple):
    """What a scorer contributes to the bounds of one request: per position a row of
    ``table`` (static sums, or predictions when not ``logistic``), and when ``logistic`` the
    request's shared sums and the crosses' bounds, added before the sigmoid."""

    table: F64
    logistic: bool
    z0_click: float = 0.0
    z0_install: float = 0.0
    cross_click: float = 0.0
    cross_install: float = 0.0


def bound_terms(scorer: Scorer, z0: tuple[float, float], crosses: int | None = None) -> BoundTerms:
    """The terms of ``scorer.bound_groups`` for a request whose shared sums are ``z0`` and that
    has ``crosses`` crosses (its number of suffixes; None: the most a request has)."""
    if isinstance(scorer, PositionScorer):
        cc, ci = scorer.cross_bound(crosses)
        return BoundTerms(scorer.static, True, z0[0] + SLACK, z0[1] + SLACK, cc, ci)
    return BoundTerms(scorer.rates, False)


class Tops(NamedTuple):
    """Per run of an imp shape (``bidder.candidates.ShapeRuns``): the largest row of a
    scorer's table over the run's positions, and the goal of its campaign."""

    tops: F64
    goal_codes: npt.NDArray[np.int8]
    goal_prices: I64


_SHAPES: Final = 16  # imp shapes whose tops are remembered per compiled snapshot and model


class ShapeTops:
    """The ``Tops`` of the imp shapes seen, for one compiled snapshot and model (a new one
    for each: they hold the model's static sums), the least recently used evicted first. They
    depend on the shape alone, not on the request, so a request reads only the rows of its
    candidates' runs, in increasing order, instead of every eligible position's row."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: OrderedDict[BigKey, Tops] = OrderedDict()

    def get(
        self,
        shape: BigKey,
        runs: ShapeRuns,
        table: F64,
        goal_codes: npt.NDArray[np.int8],
        goal_prices: I64,
    ) -> Tops:
        known = self._memo.get(shape)
        if known is not None:
            self._memo.move_to_end(shape)
            return known
        heads = runs.positions[runs.starts[:-1]]  # a campaign's creatives share its goal
        if len(heads):
            top = np.maximum.reduceat(table[runs.positions], runs.starts[:-1], axis=0)
        else:
            top = np.zeros((0, 2), dtype=np.float64)
        known = Tops(np.ascontiguousarray(top), goal_codes[heads], goal_prices[heads])
        self._memo[shape] = known
        if len(self._memo) > _SHAPES:
            self._memo.popitem(last=False)
        return known


class Survivors(NamedTuple):
    kept: Positions  # the candidates that survive their floor, increasing
    lows: I64  # the lowest bid of each: max(floor, minimum bid, 1)
    bounds: F64  # an upper bound of each one's auction weight, >= 0
    below: int  # candidates whose maximum bid is under a known floor


def python_imp_bounds(
    flat: Positions,
    starts: Positions,
    max_bids: I64,
    floors: I64,
    terms: BoundTerms,
    goal_codes: npt.NDArray[np.int8],
    goal_prices: I64,
    low_min: int,
) -> Survivors:
    """The reference over numpy arrays. Candidate g's positions are
    ``flat[starts[g]:starts[g + 1]]`` (at least one); a floor < 0 (a deal's in an unknown
    currency) drops the candidate without counting it in ``below``."""
    known = floors >= 0
    ok = known & (max_bids >= floors)
    below = int(np.count_nonzero(known & ~ok))
    kept = np.flatnonzero(ok)
    counts = np.diff(starts)
    flat_kept = flat[np.repeat(ok, counts)]
    starts_kept = np.zeros(len(kept) + 1, dtype=np.intp)
    np.cumsum(counts[kept], out=starts_kept[1:])
    lows = np.maximum(floors[kept], low_min)
    if not len(kept):
        return Survivors(kept, lows, np.zeros(0, dtype=np.float64), below)
    top = np.maximum.reduceat(terms.table[flat_kept], starts_kept[:-1], axis=0)
    joint: F64 | None = None
    if terms.logistic:  # the scorer's own bound of a position, over the group's largest sums
        rates = np.empty((len(kept), 2), dtype=np.float64)
        rows = np.arange(len(kept), dtype=np.intp)
        _bound(
            rows,
            np.ascontiguousarray(top),
            terms.z0_click,
            terms.z0_install,
            terms.cross_click,
            terms.cross_install,
            rates,
        )
        # the install goal's rate bound: one sigmoid of the two heads' sums, s(a) s(b) <= s(a+b)
        summed = (top[:, 0] + terms.z0_click + terms.cross_click) + (
            top[:, 1] + terms.z0_install + terms.cross_install
        )
        both = np.empty((len(kept), 2), dtype=np.float64)
        _bound(rows, np.ascontiguousarray(np.stack([summed, summed], axis=1)), 0, 0, 0, 0, both)
        joint = both[:, 0]
    else:
        rates = top
    heads = flat_kept[starts_kept[:-1]]  # a campaign's creatives share its goal
    bounds = weight_bounds(goal_codes[heads], goal_prices[heads], rates, lows, joint)
    return Survivors(kept, lows, bounds, below)


def weight_bounds(
    goal_codes: npt.NDArray[np.int8],
    goal_prices: I64,
    rates: F64,
    lows: I64,
    joint: F64 | None = None,
) -> F64:
    """Upper bounds of the auction weights, from upper bounds of (p_click, p_install): the
    value ``bidder.scoring.value_cpm_micros`` computes from those (the same float operations,
    monotone in the rates) + 1, less the lowest surviving bid; 0 when not positive. ``joint``:
    an upper bound of p_click x p_install itself, used for the install goals instead of the
    product when given."""
    p_click = rates[:, 0]
    p = np.where(goal_codes == 1, p_click, p_click * rates[:, 1] if joint is None else joint)
    scaled = goal_prices.astype(np.float64) * np.minimum(p, 1.0) * 1000.0
    values = np.where(goal_codes == 0, goal_prices, scaled.astype(np.int64) + 1)
    bounds: F64 = np.maximum(values - lows, 0).astype(np.float64)
    return bounds


class RunValues:
    """The race's refined bounds of an imp whose candidates are runs of its shape: for
    candidates ``js``, the largest exact value over the creatives of each (candidate j's are
    run ``cand_runs[j]``) less its lowest bid ``lows[j]``, at least 0. ``best_values`` of those
    positions scored; for a hashed linear model one compiled pass (``bidder._scorer.RunScorer``,
    made once per imp) without gathering them."""

    __slots__ = (
        "_cand_runs",
        "_compiled",
        "_goals",
        "_lows",
        "_runs",
        "_scorer",
        "_suffixes",
        "_z0",
    )

    def __init__(
        self,
        scorer: Scorer,
        z0: tuple[float, float],
        suffixes: tuple[str, ...],
        runs: ShapeRuns,
        cand_runs: Positions,
        lows: I64,
        goal_codes: npt.NDArray[np.int8],
        goal_prices: I64,
    ) -> None:
        self._compiled: Callable[[list[int]], list[float]] | None = None
        if _RunScorer is not None and isinstance(scorer, PositionScorer):
            self._compiled = _RunScorer(
                cand_runs,
                lows,
                runs.starts,
                runs.positions,
                scorer.static,
                scorer.tables.states,
                [s.encode() for s in suffixes],
                scorer.pairs,
                scorer.mask,
                z0[0],
                z0[1],
                goal_codes,
                goal_prices,
            )
        self._scorer, self._z0, self._suffixes, self._runs = scorer, z0, suffixes, runs
        self._cand_runs, self._lows, self._goals = cand_runs, lows, (goal_codes, goal_prices)

    def __call__(self, js: list[int]) -> list[float]:
        if self._compiled is not None:
            return self._compiled(js)
        flat, starts = self._runs.gather(self._cand_runs[js])
        scored = self._scorer.score(self._z0, flat, list(self._suffixes))
        tight = best_values(scored, flat, starts, *self._goals, self._lows[js])
        out: list[float] = tight.tolist()
        return out


def python_best_values(
    predictions: F64,
    flat: Positions,
    starts: Positions,
    goal_codes: npt.NDArray[np.int8],
    goal_prices: I64,
    lows: I64,
) -> F64:
    """Per group g (rows ``starts[g]:starts[g + 1]`` of ``predictions``, the exact
    (p_click, p_install) of positions ``flat``): the largest value over its creatives less
    its lowest bid, at least 0. It bounds the weight of whichever creative the candidate
    shows, without choosing it: the reference of ``bidder._bounds.best_values``."""
    goals = [(GOAL_NAMES[int(goal_codes[p])], int(goal_prices[p])) for p in flat.tolist()]
    values = values_cpm_micros(goals, [(a, b) for a, b in predictions.tolist()])
    out = np.empty(len(lows), dtype=np.float64)
    for g in range(len(lows)):
        best = max(values[int(starts[g]) : int(starts[g + 1])])
        out[g] = float(max(best - int(lows[g]), 0))
    return out


_compiled: Callable[..., tuple[Positions, I64, F64, int]] | None
_entries: Callable[..., tuple[Positions, I64, F64, int]] | None
best_values: Callable[[F64, Positions, Positions, npt.NDArray[np.int8], I64, I64], F64]
try:
    from bidder._bounds import best_values as _best_values
    from bidder._bounds import entry_bounds as _entry_bounds
    from bidder._bounds import imp_bounds as _imp_bounds

    _compiled, _entries, best_values = _imp_bounds, _entry_bounds, _best_values
except ImportError:  # pragma: no cover - the extension is built by `make`
    _compiled = _entries = None
    best_values = python_best_values

COMPILED: Final = _compiled is not None


def entry_bounds(
    rows: Positions,
    max_bids: I64,
    floors: I64,
    terms: BoundTerms,
    tops: Tops,
    low_min: int,
) -> Survivors:
    """``imp_bounds`` of candidates that are runs ``rows`` of an imp shape whose ``tops``
    (from ``terms.table``) are known: the same numbers, in one compiled loop over rows.
    ``floors`` of length 1: every candidate's floor."""
    if _entries is None:
        floors = np.broadcast_to(floors, max_bids.shape)
        flat = np.arange(len(rows), dtype=np.intp)
        starts = np.arange(len(rows) + 1, dtype=np.intp)
        by_row = BoundTerms(tops.tops[rows], *terms[1:])
        codes, prices = tops.goal_codes[rows], tops.goal_prices[rows]
        return python_imp_bounds(flat, starts, max_bids, floors, by_row, codes, prices, low_min)
    kept, lows, bounds, below = _entries(
        rows,
        max_bids,
        floors,
        tops.tops,
        terms.logistic,
        terms.z0_click,
        terms.z0_install,
        terms.cross_click,
        terms.cross_install,
        tops.goal_codes,
        tops.goal_prices,
        low_min,
    )
    return Survivors(kept, lows, bounds, below)


def imp_bounds(
    flat: Positions,
    starts: Positions,
    max_bids: I64,
    floors: I64,
    terms: BoundTerms,
    goal_codes: npt.NDArray[np.int8],
    goal_prices: I64,
    low_min: int,
) -> Survivors:
    """``python_imp_bounds`` in one compiled loop when built."""
    if _compiled is None:
        return python_imp_bounds(
            flat, starts, max_bids, floors, terms, goal_codes, goal_prices, low_min
        )
    kept, lows, bounds, below = _compiled(
        flat,
        starts,
        max_bids,
        floors,
        terms.table,
        terms.logistic,
        terms.z0_click,
        terms.z0_install,
        terms.cross_click,
        terms.cross_install,
        goal_codes,
        goal_prices,
        low_min,
    )
    return Survivors(kept, lows, bounds, below)


__all__ = [
    "COMPILED",
    "GOAL_CODES",
    "GOAL_NAMES",
    "BoundTerms",
    "RunValues",
    "ShapeTops",
    "Survivors",
    "Tops",
    "best_values",
    "bound_terms",
    "entry_bounds",
    "imp_bounds",
    "python_best_values",
    "python_imp_bounds",
    "weight_bounds",
]
