"""Scoring a compiled snapshot's candidates with a hashed linear model, laid out by position.

A candidate is a creative position of the compiled snapshot; its features are the static ones
(campaign and creative), crosses ``prefix + suffix`` (the prefixes its own, the suffixes the
request's: ``bidder.scoring.cross_prefixes``/``cross_suffixes``) and the request's shared ones.

Everything that does not depend on the request is hashed once per snapshot
(``PositionTables``): each position's static features as full MurmurHash3 values, and each cross
prefix as a MurmurHash3 *midstate* (the hash after the prefix's whole 4-byte blocks, the bytes
left over and the length), so that a cross costs only its suffix's few blocks at request time.
Per model, ``PositionScorer`` adds each position's static weights once (``static_sums``). Per
request, one compiled loop (``bidder._scorer.score``) hashes the crosses, gathers both heads'
weights from the model's contiguous float32 array and applies the sigmoid, without the GIL and
without any memo: no table fills up, nothing is cleared, a cold request costs what a warm one
does. The sums are added in the model's own order, so the predictions equal
``HashedLinearModel.predict_crossed`` exactly (tests/bidder/test_bidder_scorer.py).

``bound`` gives, per position, upper bounds of both predictions without hashing any cross: the
position's static sum + the shared sum + (number of the request's crosses) x (the head's largest
weight, at least 0). The pipeline uses them to stop pricing early (``bidder.race``).

The last cross prefix (``campaign^seg``) takes every one of the request's segments: suffix j
goes with prefix min(j, c - 1) of the c prefixes, and a request has c - 1 to c - 1 + 16
suffixes (``bidder.scoring.cross_pairs``).

This module holds the pure-Python references of the compiled loops (``python_*``); the compiled
ones in ``bidder/_scorer.pyx`` are used when built.

Memory per position: 6 static hashes (24 bytes) + 7 midstates (84 bytes) + 2 static sums per
model (16 bytes): about 12 MiB for 100,000 creatives.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Final

import mmh3
import numpy as np
import numpy.typing as npt

from bidder.scoring import MAX_SEGMENT_FEATURES, HashedLinearModel, Model, StaticModel

# added to the bounds' sums so that float rounding can never put a bound below the exact sum
SLACK: Final = 1e-9
_M32: Final = 0xFFFFFFFF

U32 = npt.NDArray[np.uint32]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Positions = npt.NDArray[np.intp]


# -- pure-Python references ---------------------------------------------------------------------


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _block(h1: int, k1: int) -> int:
    k1 = (k1 * 0xCC9E2D51) & _M32
    k1 = _rotl(k1, 15)
    k1 = (k1 * 0x1B873593) & _M32
    h1 = _rotl(h1 ^ k1, 13)
    return (h1 * 5 + 0xE6546B64) & _M32


def python_midstate(data: bytes, seed: int) -> tuple[int, int, int]:
    """(h1 after the whole 4-byte blocks, the remaining bytes little-endian, the length)."""
    h1 = seed & _M32
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        h1 = _block(h1, int.from_bytes(data[i : i + 4], "little"))
    return h1, int.from_bytes(data[whole:], "little"), len(data)


def python_resume(state: tuple[int, int, int], suffix: bytes) -> int:
    """MurmurHash3 (x86, 32 bit) of prefix + suffix from the prefix's midstate: mmh3 of the
    remaining bytes, with the state and length put back (checked against mmh3 in the tests)."""
    h1, tail, length = state
    have = length & 3
    data = tail.to_bytes(have, "little") + suffix
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        h1 = _block(h1, int.from_bytes(data[i : i + 4], "little"))
    k1 = int.from_bytes(data[whole:], "little")
    if len(data) - whole:
        k1 = (k1 * 0xCC9E2D51) & _M32
        k1 = _rotl(k1, 15)
        k1 = (k1 * 0x1B873593) & _M32
        h1 ^= k1
    h1 ^= (length + len(suffix)) & _M32
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & _M32
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & _M32
    return h1 ^ (h1 >> 16)


def python_hash_rows(
    statics: Sequence[tuple[str, ...]], prefixes: Sequence[tuple[str, ...]], seed: int
) -> tuple[U32, U32]:
    n = len(statics)
    if len(prefixes) != n:
        raise ValueError("statics and prefixes differ in length")
    s = len(statics[0]) if n else 0
    c = len(prefixes[0]) if n else 0
    hashes = np.empty((n, s), dtype=np.uint32)
    states = np.empty((n, c, 3), dtype=np.uint32)
    for i, (row, pre) in enumerate(zip(statics, prefixes, strict=True)):
        if len(row) != s or len(pre) != c:
            raise ValueError("every position needs the same number of features")
        for j, f in enumerate(row):
            hashes[i, j] = mmh3.hash(f, seed, signed=False)
        for j, p in enumerate(pre):
            states[i, j] = python_midstate(p.encode(), seed)
    return hashes, states


def python_hash_strings(features: Sequence[str], seed: int) -> U32:
    return np.array([mmh3.hash(f, seed, signed=False) for f in features], dtype=np.uint32)


def python_static_sums(hashes: U32, weights: F32, mask: int) -> F64:
    out = np.zeros((hashes.shape[0], 2), dtype=np.float64)
    for i in range(hashes.shape[0]):
        zr = zi = 0.0
        for h in hashes[i]:
            k = int(h) & mask
            zr += float(weights[0, k])
            zi += float(weights[1, k])
        out[i] = (zr, zi)
    return out


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(z, -60.0), 60.0)))


def python_score(
    positions: Positions,
    static: F64,
    states: U32,
    suffixes: list[str],
    weights: F32,
    mask: int,
    z0_click: float,
    z0_install: float,
    out: F64,
) -> None:
    last = states.shape[1] - 1
    if not last <= len(suffixes) <= last + MAX_SEGMENT_FEATURES:
        raise ValueError("one suffix per cross slot, the last slot's repeated 0 to 16 times")
    encoded = [x.encode() for x in suffixes]
    for i, pos in enumerate(positions):
        zr = float(static[pos, 0]) + z0_click
        zi = float(static[pos, 1]) + z0_install
        for j, x in enumerate(encoded):
            st = states[pos, j if j < last else last]
            k = python_resume((int(st[0]), int(st[1]), int(st[2])), x) & mask
            zr += float(weights[0, k])
            zi += float(weights[1, k])
        out[i] = (_sigmoid(zr), _sigmoid(zi))


def python_bound(
    positions: Positions,
    static: F64,
    z0_click: float,
    z0_install: float,
    cross_click: float,
    cross_install: float,
    out: F64,
) -> None:
    for i, pos in enumerate(positions):
        out[i] = (
            _sigmoid(float(static[pos, 0]) + z0_click + cross_click),
            _sigmoid(float(static[pos, 1]) + z0_install + cross_install),
        )


try:
    from bidder._scorer import bound, hash_rows, hash_strings, score, static_sums

    COMPILED = True
except ImportError:  # pragma: no cover - the extension is built by `make`
    COMPILED = False
    hash_rows, hash_strings = python_hash_rows, python_hash_strings
    static_sums, score, bound = python_static_sums, python_score, python_bound


# -- tables and scorer --------------------------------------------------------------------------


class PositionTables:
    """What scoring needs of a snapshot's positions, hashed with one seed: static hashes
    ``uint32[n, s]`` and cross-prefix midstates ``uint32[n, c, 3]``."""

    __slots__ = ("hashes", "seed", "states")

    def __init__(
        self, statics: Sequence[tuple[str, ...]], prefixes: Sequence[tuple[str, ...]], seed: int
    ) -> None:
        self.seed = seed
        self.hashes, self.states = hash_rows(list(statics), list(prefixes), seed)

    def __len__(self) -> int:
        return int(self.hashes.shape[0])

    def extended(
        self, statics: Sequence[tuple[str, ...]], prefixes: Sequence[tuple[str, ...]]
    ) -> PositionTables:
        """New tables with these positions after the existing ones (this one is unchanged)."""
        more = PositionTables(statics, prefixes, self.seed)
        if not len(self):
            return more
        if not len(more):
            return self
        out = PositionTables([], [], self.seed)
        out.hashes = np.concatenate([self.hashes, more.hashes])
        out.states = np.concatenate([self.states, more.states])
        return out

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.states.nbytes)


# per model, its weights transposed (8 MiB at 2^20 weights): made once, not at every snapshot
# change, whose scorers share the model
_PAIRS: weakref.WeakKeyDictionary[HashedLinearModel, F32] = weakref.WeakKeyDictionary()


def _pairs_of(model: HashedLinearModel, weights: F32) -> F32:
    pairs = _PAIRS.get(model)
    if pairs is None:
        pairs = _PAIRS[model] = np.ascontiguousarray(weights.T)
    return pairs


class PositionScorer:
    """A model's predictions for the positions of one ``PositionTables``."""

    def __init__(self, model: HashedLinearModel, tables: PositionTables) -> None:
        if tables.seed != model.seed:
            raise ValueError("the tables are hashed with another seed than the model's")
        self.model = model
        self.tables = tables
        self.mask = (1 << model.bits) - 1
        self.weights: F32 = np.ascontiguousarray(model.weights, dtype=np.float32)
        self.static: F64 = static_sums(tables.hashes, self.weights, self.mask)
        # the same weights by feature, both heads side by side: a cross reads one cache line
        self.pairs: F32 = _pairs_of(model, self.weights)
        # at most this many crosses on a request: one per prefix, the last one's repeated
        self.most_crosses = max(tables.states.shape[1] - 1, 0) + MAX_SEGMENT_FEATURES
        top = self.weights.max(axis=1) if self.weights.size else np.zeros(2, np.float32)
        self.top_weight = (max(0.0, float(top[0])), max(0.0, float(top[1])))

    def cross_bound(self, crosses: int | None) -> tuple[float, float]:
        """Bounds of the sums of ``crosses`` cross weights (None: the most a request has)."""
        n = self.most_crosses if crosses is None else crosses
        return n * self.top_weight[0] + SLACK, n * self.top_weight[1] + SLACK

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def nbytes(self) -> int:
        return int(self.static.nbytes)

    def shared_sum(self, shared: list[str]) -> tuple[float, float]:
        """The biases plus the shared features' weights, added in order (``shared_sum``)."""
        idx = (hash_strings(shared, self.model.seed) & np.uint32(self.mask)).astype(np.intp)
        zr, zi = self.model.click_bias, self.model.install_bias
        for wr in self.weights[0, idx].tolist():
            zr += wr
        for wi in self.weights[1, idx].tolist():
            zi += wi
        return zr, zi

    def score(self, z0: tuple[float, float], positions: Positions, suffixes: list[str]) -> F64:
        """``float64[n, 2]``: (p_click, p_install) of each position."""
        out = np.empty((len(positions), 2), dtype=np.float64)
        score(
            positions,
            self.static,
            self.tables.states,
            suffixes,
            self.weights,
            self.mask,
            z0[0],
            z0[1],
            out,
        )
        return out

    def bound(
        self, z0: tuple[float, float], positions: Positions, crosses: int | None = None
    ) -> F64:
        """``float64[n, 2]``: upper bounds of ``score`` for each position, crosses unhashed
        (``crosses``: how many the request has, its number of suffixes)."""
        out = np.empty((len(positions), 2), dtype=np.float64)
        cc, ci = self.cross_bound(crosses)
        bound(positions, self.static, z0[0] + SLACK, z0[1] + SLACK, cc, ci, out)
        return out

    def bound_groups(
        self,
        z0: tuple[float, float],
        flat: Positions,
        starts: Positions,
        crosses: int | None = None,
    ) -> F64:
        """``float64[m, 2]``: for each group ``flat[starts[g]:starts[g + 1]]`` (not empty),
        bounds at least those of ``bound`` for each of its positions: the group's largest
        static sums, then the same sigmoid (monotone), once per group."""
        top = np.ascontiguousarray(np.maximum.reduceat(self.static[flat], starts[:-1], axis=0))
        m = len(top)
        out = np.empty((m, 2), dtype=np.float64)
        cc, ci = self.cross_bound(crosses)
        bound(np.arange(m, dtype=np.intp), top, z0[0] + SLACK, z0[1] + SLACK, cc, ci, out)
        return out

    def predict(
        self, shared: list[str], positions: list[int], suffixes: tuple[str, ...]
    ) -> list[tuple[float, float]]:
        """(p_click, p_install) of each position on a request with these shared features and
        cross suffixes: ``model.predict_crossed`` of those positions' rows, exactly."""
        out = self.score(
            self.shared_sum(shared), np.asarray(positions, dtype=np.intp), list(suffixes)
        )
        return [(float(a), float(b)) for a, b in out.tolist()]


class StaticScorer:
    """The predictions of a model that looks at the campaign and creative only (the priors,
    ``bidder.scoring.StaticModel``): one row per position, computed once per snapshot and
    model. The bound of a position is its prediction."""

    def __init__(self, model: StaticModel, rates: F64) -> None:
        self.model = model
        self.rates = rates

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def nbytes(self) -> int:
        return int(self.rates.nbytes)

    def shared_sum(self, shared: list[str]) -> tuple[float, float]:
        return 0.0, 0.0

    def score(self, z0: tuple[float, float], positions: Positions, suffixes: list[str]) -> F64:
        rows: F64 = self.rates[positions]
        return rows

    def bound(
        self, z0: tuple[float, float], positions: Positions, crosses: int | None = None
    ) -> F64:
        rows: F64 = self.rates[positions]
        return rows

    def bound_groups(
        self,
        z0: tuple[float, float],
        flat: Positions,
        starts: Positions,
        crosses: int | None = None,
    ) -> F64:
        """The largest prediction of each group ``flat[starts[g]:starts[g + 1]]``, by head."""
        rows: F64 = np.maximum.reduceat(self.rates[flat], starts[:-1], axis=0)
        return rows

    def extended(self, statics: Sequence[tuple[str, ...]]) -> StaticScorer:
        """A scorer with the positions of these static features after the existing ones."""
        more = static_rates(self.model, statics)
        return StaticScorer(self.model, np.concatenate([self.rates, more]))


def static_rates(model: StaticModel, statics: Sequence[tuple[str, ...]]) -> F64:
    """``float64[n, 2]``: the predictions of a static model for positions of these features."""
    predict = model.predict_static
    out = np.empty((len(statics), 2), dtype=np.float64)
    for i, row in enumerate(statics):
        out[i] = predict(row)
    return out


Scorer = PositionScorer | StaticScorer


def position_scorer(model: Model, tables: PositionTables | None) -> PositionScorer | None:
    """A scorer when the model is a hashed linear one (others score through their own
    ``predict_crossed`` or ``predict``)."""
    if not isinstance(model, HashedLinearModel) or tables is None or not len(tables):
        return None
    return PositionScorer(model, tables)
