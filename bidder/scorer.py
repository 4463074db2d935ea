"""Scoring a compiled snapshot's candidates with a hashed linear model, laid out by position.

A candidate is a creative position of the compiled snapshot; its features are the static ones
(campaign and creative) and crosses ``prefix + suffix``, the prefixes its own, the suffixes the
request's (``bidder.scoring.cross_prefixes``/``cross_suffixes``). ``HashedLinearModel`` keeps
memo dicts from feature strings to weights; on the bid path those lookups were mostly cache
misses (a tuple hash over six strings, then dict slots, keys and boxed values scattered over the
heap): scoring a request cost three times as much cold as warm. ``PositionScorer`` keeps the
same sums as contiguous arrays instead: each position's static sum, and per (cross slot, suffix)
one array over that slot's distinct prefixes, filled on first use. The sums are added in the
model's own order, so the predictions equal ``HashedLinearModel.predict_crossed`` exactly
(tests/bidder/test_bidder_scorer.py).

A scorer belongs to one snapshot and one model: the pipeline builds a new one when either
changes. Its tables are bounded (``max_table_bytes``) and cleared when full.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from bidder.scoring import HashedLinearModel, Model

DEFAULT_MAX_TABLE_BYTES: Final = 32 << 20


def python_logistic_positions(
    positions: list[int],
    static: npt.NDArray[np.float64],
    ids: npt.NDArray[np.intp],
    tables: list[npt.NDArray[np.float64]],
    miss: Callable[[int, int], complex],
    z0_click: float,
    z0_install: float,
) -> list[tuple[float, float]]:
    """(sigmoid(click sum), sigmoid(install sum)) of each position, sums clamped to +-60: the
    position's static sums + z0, then ``tables[j][ids[position, j]]`` for each slot j in
    order (``miss(j, id)`` when that entry is still NaN). ``bidder._scorer`` compiles it."""
    out = []
    exp = math.exp
    for pos in positions:
        zr = float(static[pos, 0]) + z0_click
        zi = float(static[pos, 1]) + z0_install
        for j, table in enumerate(tables):
            k = int(ids[pos, j])
            wr = float(table[k, 0])
            if math.isnan(wr):
                w = miss(j, k)
                zr += w.real
                zi += w.imag
            else:
                zr += wr
                zi += float(table[k, 1])
        zr = min(max(zr, -60.0), 60.0)
        zi = min(max(zi, -60.0), 60.0)
        out.append((1.0 / (1.0 + exp(-zr)), 1.0 / (1.0 + exp(-zi))))
    return out


try:
    from bidder._scorer import logistic_positions
except ImportError:  # pragma: no cover - the extension is built by `make`
    logistic_positions = python_logistic_positions


class PositionScorer:
    def __init__(
        self,
        model: HashedLinearModel,
        statics: Sequence[tuple[str, ...]],
        prefixes: Sequence[tuple[str, ...]],
        *,
        max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES,
    ) -> None:
        if len(statics) != len(prefixes):
            raise ValueError("statics and prefixes differ in length")
        self.model = model
        n = len(statics)
        self.static = np.zeros((n, 2), dtype=np.float64)
        for i, row in enumerate(statics):
            z = model.static_sum(row)
            self.static[i] = (z.real, z.imag)
        slots = len(prefixes[0]) if n else 0
        self.ids = np.zeros((n, slots), dtype=np.intp)
        # slot -> its distinct prefixes; ids[position, slot] indexes them
        self.prefixes: list[list[str]] = []
        for j in range(slots):
            seen: dict[str, int] = {}
            for i, row in enumerate(prefixes):
                if len(row) != slots:
                    raise ValueError("every position needs the same number of cross prefixes")
                self.ids[i, j] = seen.setdefault(row[j], len(seen))
            self.prefixes.append(list(seen))
        self.max_table_bytes = max_table_bytes
        self._tables: dict[tuple[int, str], npt.NDArray[np.float64]] = {}
        self._table_bytes = 0

    @property
    def version(self) -> int:
        return self.model.version

    def predict(
        self, shared: list[str], positions: list[int], suffixes: tuple[str, ...]
    ) -> list[tuple[float, float]]:
        """(p_click, p_install) of each position on a request with these shared features and
        cross suffixes: ``model.predict_crossed`` of those positions' rows, exactly."""
        if len(suffixes) != len(self.prefixes):
            raise ValueError("one suffix per cross slot")
        z0 = self.model.shared_sum(shared)
        tables = [self._table(j, x) for j, x in enumerate(suffixes)]
        weight, prefixes = self.model.weight, self.prefixes

        def miss(j: int, k: int) -> complex:
            w = weight(prefixes[j][k] + suffixes[j])
            tables[j][k] = (w.real, w.imag)
            return w

        return logistic_positions(positions, self.static, self.ids, tables, miss, z0.real, z0.imag)

    def _table(self, slot: int, suffix: str) -> npt.NDArray[np.float64]:
        key = (slot, suffix)
        table = self._tables.get(key)
        if table is None:
            size = len(self.prefixes[slot])
            if self._table_bytes + size * 16 > self.max_table_bytes:
                self._tables.clear()
                self._table_bytes = 0
            table = self._tables[key] = np.full((size, 2), np.nan, dtype=np.float64)
            self._table_bytes += table.nbytes
        return table


def position_scorer(
    model: Model, statics: Sequence[tuple[str, ...]], prefixes: Sequence[tuple[str, ...]]
) -> PositionScorer | None:
    """A scorer when the model is a hashed linear one (others score through their own
    ``predict_crossed`` or ``predict``)."""
    if not isinstance(model, HashedLinearModel) or not statics:
        return None
    return PositionScorer(model, statics, prefixes)
