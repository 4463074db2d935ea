"""The internal auction's draw as an exponential race, and pricing that stops at its winner.

The internal auction (ARCHITECTURE.md, step 9) draws one winner per imp with probability
proportional to its weight w_j = P(win | bid) x (value - bid). The cumulative draw of
``bidder.auction.draw`` needs every weight: r = u x sum(w), so every candidate with a non-zero
weight moves r, and no bound on the others can keep its answer identical without pricing them
all. This module draws from the same law in a way that does admit an exact early stop.

The draw (``winner``)
    Each candidate j of an imp gets an exponential E_j = -ln(u_j), u_j in (0, 1] from
    SplitMix64 of (one 64-bit seed per imp, j): ``exponentials``. The winner is the candidate
    with the smallest key E_j / w_j among those with w_j > 0, ties to the lower j. The keys are
    independent exponentials of rates w_j, so P(j wins) = w_j / sum(w): the law of the
    cumulative draw. When no survivor has a positive weight, the winner is the survivor with
    the smallest E_j: uniform, as there. The pipeline takes the seed from its RNG once per imp
    with candidates, whether it prices one candidate or all of them: the RNG's state after a
    request does not depend on how much was priced.

The early stop (``race``, threshold-algorithm style)
    Let b_j be an upper bound of w_j known before pricing j. Because P(win) <= 1 and a surviving
    bid is at least max(floor, minimum bid, 1) micros,

        w_j <= value_j - max(floor_j, min_bid, 1) <= value_ub_j - max(floor_j, min_bid, 1) = b_j

    where value_ub_j bounds the value from the bounds of the predicted rates
    (``bidder.scorer.PositionScorer.bound``; exact once the candidate is scored). IEEE
    arithmetic is monotone (a correctly rounded product by p <= 1 is at most the other factor,
    a correctly rounded division by a larger positive number is not larger), so the computed
    w_j <= b_j and E_j / b_j <= E_j / w_j: E_j / b_j is a lower bound of j's key. So is
    F_j / b_j for any F_j <= E_j: the race first orders every candidate by such a key, F_j a
    lower bound of -ln(u_j) from a short series without a logarithm (``python_first_keys``,
    within 2 % of E_j, a relative 3e-7 at E_j = 0.01), and takes the logarithm only for the
    candidates it reaches (about 70 of 3,200 an imp at 20,000 campaigns). Candidates
    wait in a priority queue ordered by (lower bound of the key, j); each pop tightens the bound
    of the smallest (b_j from bounds -> b_j from the exact value -> the priced w_j itself). When
    the smallest entry is an exact key, every other candidate's exact key is at least its queue
    key, which is at least this one in the same (key, j) order: it is the smallest of all, the
    very winner of pricing everything. A candidate with b_j <= 0 cannot have w_j > 0 and waits
    outside the queue; it is priced only when no candidate turns out to have a positive weight
    (the uniform case needs every survivor). The proof rests on P(win) <= 1, a contract of the
    market model (``bidder.pricing``: 0.5 x erfc(.) <= 1 for the log-normal one); a priced
    weight found above its bound makes the race price everything and answer as the reference,
    but a broken bound of a candidate never priced cannot be seen.

    So the winner, its price, and the RNG's state are exactly those of pricing every candidate
    (``early=False``, the reference; tests/bidder/test_bidder_race.py compares both on the
    bench's request mix and on crafted worst cases). What differs is work, and the no-bid
    reasons of candidates that were never priced when some imp did find a winner (a bid is then
    answered and those reasons are not reported).

``limit`` caps the candidates priced per imp, a safety net against bounds so loose that the
race would price most of a large portfolio: when it is reached, the winner is drawn among the
candidates priced so far (the only case where the answer may differ from pricing everything;
``RaceResult.capped`` says so).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

_GOLDEN: Final = 0x9E3779B97F4A7C15
_GOLDEN_U64: Final = np.uint64(_GOLDEN)
_MIX1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX2: Final = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M64: Final = (1 << 64) - 1
_INF: Final = math.inf
_CREATIVE_STREAM: Final = 0x6A09E667F3BCC909
# Bounds refined per step (scoring a few candidates at once costs little more than one).
REFINE_BATCH: Final = 8
CHUNK: Final = 64  # candidates put in order at a time

F64 = npt.NDArray[np.float64]

_race_exponentials: Callable[[int, int], F64] | None
_race_loop: Callable[..., tuple[int, int]] | None
try:
    from bidder._bounds import race_loop as _compiled_race_loop
    from bidder._offers import race_exponentials as _race_exponentials

    _race_loop = _compiled_race_loop
except ImportError:  # pragma: no cover - the extension is built by `make`
    _race_exponentials = _race_loop = None


def exponentials(seed: int, n: int) -> F64:
    """E_j = -ln(u_j) for j in 0..n-1 (``python_uniforms``): independent Exp(1) draws from one
    64-bit seed. The logarithm is the C library's (``math.log``), not numpy's, whose vector
    code differs in the last bit for a few values in a thousand and with the machine's
    instruction set."""
    if _race_exponentials is not None:  # the same doubles in one compiled loop
        return _race_exponentials(seed, n)
    return python_exponentials(seed, n)


def python_uniforms(seed: int, n: int) -> F64:
    """u_j = (SplitMix64(seed + (j + 1) x golden) >> 11 + 1) / 2**53 in (0, 1], for j in
    0..n-1, over numpy arrays (the compiled loops' ``bidder._values.race_uniform``)."""
    # array arithmetic wraps modulo 2**64 without a warning (only scalar arithmetic warns)
    j = np.arange(1, n + 1, dtype=np.uint64)
    z = j * _GOLDEN_U64
    z += np.uint64(seed & _M64)
    z ^= z >> _S30
    z *= _MIX1
    z ^= z >> _S27
    z *= _MIX2
    z ^= z >> _S31
    u: F64 = ((z >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / (1 << 53))
    return u


def python_exponentials(seed: int, n: int) -> F64:
    """``exponentials`` over numpy arrays and ``math.log``: the reference of the compiled
    loop."""
    u = python_uniforms(seed, n)
    return np.fromiter((-math.log(x) for x in u.tolist()), dtype=np.float64, count=n)


def exponential_at(seed: int, j: int) -> float:
    """E_j alone: ``exponentials(seed, n)[j]`` for any n > j, the same double (the compiled
    loops' ``bidder._values.race_exponential``)."""
    z = _mix(((seed & _M64) + (j + 1) * _GOLDEN) & _M64)
    return -math.log(float((z >> 11) + 1) * (1.0 / (1 << 53)))


_LN2_DOWN: Final = 0.6931471805599453  # ln 2 rounded down (by 2.3e-17)
_SQRT_HALF: Final = 0.7071067811865476
_ROUNDING: Final = 1e-12
_THIRD: Final = 0.3333333333333333  # 1/3 rounded: a product instead of a division


def python_exponential_floors(u: F64) -> F64:
    """Lower bounds of -ln(u), u in (0, 1], without a logarithm: the compiled loops'
    ``bidder._values.exponential_floor`` (its docstring has the argument), the same operations
    over arrays. The race orders its candidates by these over their bounds and takes the
    logarithm only for those it reaches."""
    m, e = np.frexp(u)
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = np.where(low, e - 1, e)
    x = m - 1.0
    a = -(e.astype(np.float64) * _LN2_DOWN + ((x - (x * x) * 0.5) + ((x * x) * x) * _THIRD))
    out: F64 = np.maximum(a - _ROUNDING, 0.0)
    return out


def python_first_keys(seed: int, bounds: F64) -> F64:
    """The race's first keys: ``python_exponential_floors`` of the candidates' uniforms over
    their bounds, inf where a bound is not positive or the key not finite (the reference of
    the compiled ``bidder._bounds.first_keys``)."""
    floors = python_exponential_floors(python_uniforms(seed, len(bounds)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        keys = np.where(bounds > 0.0, floors / np.where(bounds > 0.0, bounds, 1.0), _INF)
    keys[~np.isfinite(keys)] = _INF
    return keys


def draw_key(seed: int, j: int) -> int:
    """A 64-bit value of its own for candidate j of an imp: SplitMix64 of a stream apart from
    ``exponentials``' (the seed mixed once more), so that a draw made for j alone (the creative
    shown) is the same whether or not the others are drawn."""
    z = (_mix((seed ^ _CREATIVE_STREAM) & _M64) + (j + 1) * _GOLDEN) & _M64
    return _mix(z)


def unit(key: int) -> float:
    """A 64-bit value as a uniform in [0, 1): its 53 high bits."""
    return (key >> 11) * (1.0 / (1 << 53))


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def key_order(keys: F64) -> tuple[int, Iterator[tuple[list[int], list[float]]]]:
    """How many of ``keys`` are finite, and those candidates with their keys in increasing
    (key, j) order, a chunk at a time (``_ascending``: the reference of the compiled loop's
    batches, ``bidder._bounds.KeyOrder``)."""
    finite = int(np.count_nonzero(np.isfinite(keys)))
    return finite, _ascending(keys, finite)


def _ascending(keys: F64, finite: int) -> Iterator[tuple[list[int], list[float]]]:
    """The indices of the ``finite`` finite keys and the keys, in increasing (key, index)
    order, in chunks of about ``CHUNK``: each chunk every key up to a threshold (ties
    included, so the order across chunks holds), found by a partition rather than a sort of
    all."""
    if finite <= 4 * CHUNK:
        order = np.argsort(keys, kind="stable")[:finite]
        yield order.tolist(), keys[order].tolist()
        return
    remaining = keys.copy()
    left = finite
    while left > 0:
        k = min(CHUNK, left)
        threshold = np.partition(remaining, k - 1)[k - 1]
        found = np.flatnonzero(remaining <= threshold)  # increasing indices
        found = found[np.argsort(remaining[found], kind="stable")]
        yield found.tolist(), remaining[found].tolist()
        remaining[found] = _INF
        left -= len(found)


@dataclass(slots=True)
class RaceResult:
    winner: int | None  # candidate index
    priced: int  # candidates priced
    capped: bool = False  # the limit stopped the race: the winner is among the priced only


def winner(
    exps: Sequence[float] | F64, weights: dict[int, float], survivors: Sequence[int]
) -> int | None:
    """The draw over priced candidates: ``weights`` of the survivors (candidate -> w >= 0),
    ``survivors`` in any order. Smallest (E_j / w_j, j) over w_j > 0, else smallest
    (E_j, j) over the survivors, else None."""
    best: tuple[float, int] | None = None
    for j in survivors:
        w = weights[j]
        if w > 0.0:
            key = (float(exps[j]) / w, j)
            if best is None or key < best:
                best = key
    if best is not None:
        return best[1]
    zero = [(float(exps[j]), j) for j in survivors]
    return min(zero)[1] if zero else None


RACE_WON: Final = 0  # a candidate's exact key was the smallest: it is the winner
RACE_CAPPED: Final = 1  # the limit of candidates priced was reached
RACE_EVERYTHING: Final = 2  # no candidate with a positive weight, or a bound did not hold

_Price = Callable[[list[int]], Sequence[float | None]]
_Refine = Callable[[list[int]], Sequence[float]]


def race(
    seed: int,
    bounds: F64,
    price: _Price,
    *,
    refine: _Refine | None = None,
    excluded: Callable[[int], bool] | None = None,
    limit: int = 0,
    early: bool = True,
) -> RaceResult:
    """The winner among ``len(bounds)`` candidates, whose exponentials are
    ``exponentials(seed, len(bounds))``, pricing as few as the bounds allow.

    ``bounds[j]`` bounds candidate j's weight (``refine(js)`` gives tighter bounds for those
    candidates, when given); ``price(js)`` prices those candidates: the weight of each, or None
    when it is dropped;
    ``excluded(j)``: j may not win (its campaign won an earlier imp) and is not priced.
    ``early=False`` prices every candidate: the reference the early stop must equal. The loop
    is compiled (``bidder._bounds.race_loop``) when built, else ``python_race_loop``."""
    n = len(bounds)
    weights: dict[int, float] = {}
    survivors: list[int] = []
    priced: set[int] = set()

    def do_price(js: list[int]) -> list[float | None]:
        priced.update(js)
        got = list(price(js))
        for j, w in zip(js, got, strict=True):
            if w is not None:
                weights[j] = w
                survivors.append(j)
        return got

    def everything() -> RaceResult:
        rest = [j for j in range(n) if j not in priced and not (excluded and excluded(j))]
        if rest:
            do_price(rest)
        return RaceResult(winner(exponentials(seed, n), weights, survivors), len(priced))

    if not early:
        return everything()
    loop = _race_loop if _race_loop is not None else python_race_loop
    verdict, j = loop(seed, bounds, do_price, refine, excluded, limit, REFINE_BATCH)
    if verdict == RACE_WON:
        return RaceResult(j, len(priced))
    if verdict == RACE_CAPPED:
        exps = exponentials(seed, n)
        return RaceResult(winner(exps, weights, survivors), len(priced), capped=True)
    # no candidate with a positive weight (the draw is uniform over every survivor), or a
    # bound did not hold: the reference, whatever it costs
    return everything()


def python_race_loop(
    seed: int,
    bounds: F64,
    price: _Price,
    refine: _Refine | None,
    excluded: Callable[[int], bool] | None,
    limit: int,
    batch: int,
) -> tuple[int, int]:
    """The early stop's loop (the module's docstring): candidates in the order of their first
    keys (``python_first_keys``: lower bounds of E_j / b_j), refined up to ``batch`` at a time
    (while their first keys come before the queue's head) when ``refine`` is given, priced
    from a queue of (key bound, j), E_j taken for the candidates refined or priced
    (``exponential_at``). (``RACE_WON``, the winner), or (``RACE_CAPPED`` /
    ``RACE_EVERYTHING``, -1). The reference of the compiled ``bidder._bounds.race_loop``."""
    # the finite keys in (key, j) order, a chunk at a time: the race rarely needs many
    finite, chunks = key_order(python_first_keys(seed, bounds))
    ordered: list[int] = []
    first: list[float] = []
    queue: list[tuple[float, int, int]] = []  # (key bound, j, level)
    refined: dict[int, float] = {}
    priced = 0
    i = 0
    while True:
        while len(ordered) < min(i + batch, finite):
            js, ks = next(chunks)
            ordered += js
            first += ks
        if i < finite and (not queue or (first[i], ordered[i]) < queue[0][:2]):
            if refine is not None:
                # up to ``batch`` of the next, while their first keys come before the queue's
                # head (those after it may never need refining)
                some: list[int] = []
                end = min(i + batch, finite)
                while i < end and (not queue or (first[i], ordered[i]) < queue[0][:2]):
                    j = ordered[i]
                    i += 1
                    if not (excluded and excluded(j)):
                        some.append(j)
                if some:
                    for j, b in zip(some, refine(some), strict=True):
                        refined[j] = b
                        if b > 0.0:
                            heapq.heappush(queue, (exponential_at(seed, j) / b, j, 1))
                continue
            j = ordered[i]
            i += 1
            if not (excluded and excluded(j)):
                heapq.heappush(queue, (first[i - 1], j, 1))
            continue
        if not queue:
            return RACE_EVERYTHING, -1
        _, j, at = heapq.heappop(queue)
        if at == 2:
            return RACE_WON, j
        if limit and priced >= limit:
            return RACE_CAPPED, -1
        priced += 1
        (w,) = price([j])
        if w is None or not w > 0.0:
            continue
        if w > float(bounds[j]) or w > refined.get(j, _INF):
            return RACE_EVERYTHING, -1
        heapq.heappush(queue, (exponential_at(seed, j) / w, j, 2))
