"""Examples as a CSR batch of feature hashes, hashed once for the whole estimator grid.

The hashes are full 32-bit MurmurHash3 values of the feature strings (``fleet.features``, the
bidder's own function); each estimator masks them to its bits, which gives exactly the index
``hash_features(features, bits, seed)`` gives the bidder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleet.features import hash_features

try:
    from learner._ftrl import hash_rows as _compiled_hash_rows

    COMPILED = True
except ImportError:  # pragma: no cover - `make build` builds it
    COMPILED = False


@dataclass(frozen=True, slots=True)
class Batch:
    hashes: npt.NDArray[np.uint32]
    offsets: npt.NDArray[np.int64]
    labels: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]

    @property
    def rows(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def slice(self, start: int, stop: int) -> Batch:
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return Batch(
            self.hashes[a:b],
            self.offsets[start : stop + 1] - a,
            self.labels[start:stop],
            self.weights[start:stop],
        )


def hash_rows_reference(
    features: Sequence[Sequence[str]], seed: int = 0
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """(hashes, offsets) through ``fleet.features``: the reference of the compiled
    ``learner._ftrl.hash_rows``."""
    lengths = np.fromiter((len(f) for f in features), dtype=np.int64, count=len(features))
    offsets = np.zeros(len(features) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [s for row in features for s in row]
    return hash_features(flat, 32, seed), offsets


def to_batch(
    features: Sequence[Sequence[str]],
    labels: Sequence[float] | npt.NDArray[np.float64],
    weights: Sequence[float] | npt.NDArray[np.float64] | None = None,
    seed: int = 0,
) -> Batch:
    if COMPILED:
        hashes, offsets = _compiled_hash_rows(features, seed)
    else:
        hashes, offsets = hash_rows_reference(features, seed)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(features)) if weights is None else np.asarray(weights, dtype=np.float64)
    if y.shape != (len(features),) or w.shape != (len(features),):
        raise ValueError("one label and one weight per example")
    return Batch(hashes, offsets, y, w)
