"""Over all candidates of an imp, before its internal auction: which survive their floor, the
lowest bid each may make, and an upper bound of each one's auction weight over all its
creatives (``bidder.race`` stops pricing with them).

A candidate's weight bound comes from the largest rate bounds of its creatives, by head (a value
grows with each rate), and its campaign's goal: for a hashed linear model the largest static
sum t of its positions and the request's bounding sum c (its shared sum, the crosses' bound and
a slack, ``bound_terms``) through the sigmoid; for a static model (the priors) its positions'
largest predictions. Then the value ``bidder.scoring.value_cpm_micros`` computes from those
rates (the same float operations, monotone in the rates) + 1, less the lowest surviving bid, at
least 0. An install goal's rate p_click x p_install is bounded with one sigmoid of the two heads'
bounding sums, s(a) s(b) <= s(a + b) since (1 + e^-a)(1 + e^-b) >= 1 + e^-(a+b).

The sigmoid without an exponential per candidate (``python_rate_bounds``). The bound is
1 / (1 + L) with L = exp(-t) exp(-c) shrunk: the factor of t is computed once per imp shape
(``python_exp_factors``, remembered in its ``Tops``), the factor of c once per request, so a
candidate costs a product and a division. It holds because:
- the scorer predicts s(z) = 1 / (1 + exp(-clamp(z))) of its own float sum z of the static
  sum, the shared sum and the crosses, clamped to +-60; t + c exceeds that z by at least the
  slack, 2e-9, which no rounding of those sums reaches;
- each exponential is within an ulp (2**-52 relative) of the exact one, the product rounds
  by half an ulp, and L is shrunk by 2**-40 (``EXP_SHRINK``): L < exp(-(t + c)) <
  exp(-z) x (1 - 2e-9) <= the scorer's exp(-z), the libm exponential being monotone (which the
  scorer's own bounds assume too);
- L is at most exp(60) shrunk (``EXP60_LOW``): when z < -60 the scorer takes exp(60);
- a factor is capped at 1e300 (``python_capped_exp``: capping lowers L, and keeps L finite,
  so that 0 x inf never gives a NaN);
- 1 + L and its inverse are monotone: the bound is at least the scorer's prediction.
tests/bidder/test_bidder_bounds.py checks it against the sigmoid of the summed terms, which the
scorer's bound is (``PositionScorer.bound``), on random and extreme sums.

``imp_bounds`` runs one compiled loop (``bidder._bounds.imp_bounds``); ``python_imp_bounds`` is
its reference over numpy arrays (tests/bidder/test_bidder_bounds.py compares both).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from bidder.candidates import ShapeRuns
from bidder.memo import BigKey
from bidder.scorer import SLACK, PositionScorer, Scorer
from bidder.scoring import values_cpm_micros
from fleet.config import GoalType

_RunScorer: Callable[..., Callable[[list[int]], list[float]]] | None
try:
    from bidder._scorer import RunScorer as _CompiledRunScorer

    _RunScorer = _CompiledRunScorer
except ImportError:  # pragma: no cover - the extension is built by `make`
    _RunScorer = None

# goal types as codes, for the value bounds computed over arrays
GOAL_CODES: Final = {"CPM": 0, "CPC": 1, "CPI": 2, "CPA": 2}
GOAL_NAMES: Final[tuple[GoalType, ...]] = ("CPM", "CPC", "CPI")  # CPI and CPA: the same value

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Positions = npt.NDArray[np.intp]


class BoundTerms(NamedTuple):
    """What a scorer contributes to the bounds of one request: per position a row of
    ``table`` (static sums, or predictions when not ``logistic``), and when ``logistic`` the
    request's bounding sums of the two heads (its shared sums, the crosses' bounds and the
    slack), added to a static sum before the sigmoid."""

    table: F64
    logistic: bool
    click: float = 0.0
    install: float = 0.0


def bound_terms(scorer: Scorer, z0: tuple[float, float], crosses: int | None = None) -> BoundTerms:
    """The terms of ``scorer.bound_groups`` for a request whose shared sums are ``z0`` and that
    has ``crosses`` crosses (its number of suffixes; None: the most a request has)."""
    if isinstance(scorer, PositionScorer):
        cc, ci = scorer.cross_bound(crosses)
        return BoundTerms(scorer.static, True, z0[0] + SLACK + cc, z0[1] + SLACK + ci)
    return BoundTerms(scorer.rates, False)


# the rate bounds' constants (``bidder._values.rate_bound`` has the same numbers)
EXP_SHRINK: Final = 1.0 - 2.0**-40
EXP60_LOW: Final = math.exp(60.0) * EXP_SHRINK
EXP_CAP: Final = 1e300


def python_capped_exp(x: float) -> float:
    """exp(x) (the C library's, as ``math.exp``), at most ``EXP_CAP``; a NaN gives the cap."""
    try:
        y = math.exp(x)
    except OverflowError:
        return EXP_CAP
    return y if y < EXP_CAP else EXP_CAP


def python_exp_factors(tops: F64) -> F64:
    """Per row of largest static sums (t_click, t_install): the click head's factor
    capped_exp(-t_click) and the install goal's, that times capped_exp(-t_install), capped:
    the reference of ``bidder._bounds.exp_factors``."""
    out = np.empty((len(tops), 2), dtype=np.float64)
    for r, (t_click, t_install) in enumerate(tops.tolist()):
        click = python_capped_exp(-t_click)
        both = click * python_capped_exp(-t_install)  # a Python float: inf, never an error
        out[r] = (click, both if both < EXP_CAP else EXP_CAP)
    return out


def python_request_factors(terms: BoundTerms) -> tuple[float, float]:
    """The request's factors: capped_exp(-click) for a CPC goal and
    capped_exp(-(click + install)) for an install goal."""
    return python_capped_exp(-terms.click), python_capped_exp(-(terms.click + terms.install))


def python_rate_bounds(run_factors: F64, request_factor: float) -> F64:
    """Upper bounds of the scorer's sigmoid of t + c from the factors of t (per row) and of c
    (the module's docstring proves them): 1 / (1 + L), L the product shrunk, at most
    ``EXP60_LOW`` (a NaN gives that too)."""
    with np.errstate(over="ignore"):  # a product past the floats: inf, then EXP60_LOW
        low = (run_factors * request_factor) * EXP_SHRINK
    low = np.where(low < EXP60_LOW, low, EXP60_LOW)
    rates: F64 = 1.0 / (1.0 + low)
    return rates


class Tops(NamedTuple):
    """Per run of an imp shape (``bidder.candidates.ShapeRuns``): what bounds its rates (the
    ``python_exp_factors`` of the largest row of the scorer's static sums over the run's
    positions, or the largest predictions of a static model), and its campaign's goal."""

    rows: F64
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
        terms: BoundTerms,
        goal_codes: npt.NDArray[np.int8],
        goal_prices: I64,
    ) -> Tops:
        """The shape's ``Tops`` under ``terms`` (their table and kind, the same for every
        request of one compiled snapshot and model)."""
        known = self._memo.get(shape)
        if known is not None:
            self._memo.move_to_end(shape)
            return known
        heads = runs.positions[runs.starts[:-1]]  # a campaign's creatives share its goal
        if len(heads):
            top = np.maximum.reduceat(terms.table[runs.positions], runs.starts[:-1], axis=0)
        else:
            top = np.zeros((0, 2), dtype=np.float64)
        top = np.ascontiguousarray(top, dtype=np.float64)
        rows = exp_factors(top) if terms.logistic else top
        known = Tops(rows, goal_codes[heads], goal_prices[heads])
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
    top = np.ascontiguousarray(
        np.maximum.reduceat(terms.table[flat_kept], starts_kept[:-1], axis=0), dtype=np.float64
    )
    heads = flat_kept[starts_kept[:-1]]  # a campaign's creatives share its goal
    rows = python_exp_factors(top) if terms.logistic else top
    bounds = weight_bounds(goal_codes[heads], goal_prices[heads], rows, lows, terms)
    return Survivors(kept, lows, bounds, below)


def floor_survivors(max_bids: I64, floors: I64, low_min: int) -> tuple[Positions, I64, int]:
    """The candidates that survive their floor (``floors`` of length 1: every candidate's; a
    floor < 0, a deal's in an unknown currency, drops the candidate without counting it),
    their lowest bids, and how many are under a known floor."""
    floors = np.broadcast_to(floors, max_bids.shape)
    known = floors >= 0
    ok = known & (max_bids >= floors)
    kept = np.flatnonzero(ok)
    return kept, np.maximum(floors[kept], low_min), int(np.count_nonzero(known & ~ok))


def weight_bounds(
    goal_codes: npt.NDArray[np.int8],
    goal_prices: I64,
    rows: F64,
    lows: I64,
    terms: BoundTerms,
) -> F64:
    """Upper bounds of the auction weights from the candidates' bound rows (``Tops.rows``):
    the value ``bidder.scoring.value_cpm_micros`` computes from upper bounds of the rates the
    goal reads (the same float operations, monotone in the rates) + 1, less the lowest
    surviving bid; 0 when not positive. When ``terms.logistic`` a CPC goal's rate bound is
    ``python_rate_bounds`` of the click factor and an install goal's of the joint one;
    otherwise the rows are the largest predictions, and an install goal's rate their
    product."""
    if terms.logistic:
        request_click, request_both = python_request_factors(terms)
        p = np.where(
            goal_codes == 1,
            python_rate_bounds(rows[:, 0], request_click),
            python_rate_bounds(rows[:, 1], request_both),
        )
    else:
        p = np.where(goal_codes == 1, rows[:, 0], rows[:, 0] * rows[:, 1])
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
exp_factors: Callable[[F64], F64]
try:
    from bidder._bounds import best_values as _best_values
    from bidder._bounds import entry_bounds as _entry_bounds
    from bidder._bounds import exp_factors as _exp_factors
    from bidder._bounds import imp_bounds as _imp_bounds

    _compiled, _entries, best_values = _imp_bounds, _entry_bounds, _best_values
    exp_factors = _exp_factors
except ImportError:  # pragma: no cover - the extension is built by `make`
    _compiled = _entries = None
    best_values, exp_factors = python_best_values, python_exp_factors

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
    (``ShapeTops.get`` under ``terms``) are known: the same numbers, in one compiled loop over
    rows. ``floors`` of length 1: every candidate's floor."""
    if _entries is None:
        kept, lows, below = floor_survivors(max_bids, floors, low_min)
        at = rows[kept]
        bounds = weight_bounds(
            tops.goal_codes[at], tops.goal_prices[at], tops.rows[at], lows, terms
        )
        return Survivors(kept, lows, bounds, below)
    kept, lows, bounds, below = _entries(
        rows,
        max_bids,
        floors,
        tops.rows,
        terms.logistic,
        terms.click,
        terms.install,
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
        terms.click,
        terms.install,
        goal_codes,
        goal_prices,
        low_min,
    )
    return Survivors(kept, lows, bounds, below)


__all__ = [
    "COMPILED",
    "EXP60_LOW",
    "EXP_CAP",
    "EXP_SHRINK",
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
    "exp_factors",
    "floor_survivors",
    "imp_bounds",
    "python_best_values",
    "python_capped_exp",
    "python_exp_factors",
    "python_imp_bounds",
    "python_rate_bounds",
    "python_request_factors",
    "weight_bounds",
]
