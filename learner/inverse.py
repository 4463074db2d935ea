"""A bounded inverse hash map: which feature strings fell into a hash slot, for the heaviest.

A model is weights by hash index; to say what it learnt, ``rtbfleet model show`` needs names.
Keeping every string ever seen is unbounded, so the map keeps at most ``capacity`` of them:
when it holds twice that, it keeps the ``capacity`` whose weights are largest in magnitude
(the ones worth showing) and forgets the rest. Frequent features come back at once if they
were dropped while their weight was still small. Strings are kept with their full 32-bit hash,
so one map serves estimators of any size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

WeightsOf = Callable[[npt.NDArray[np.uint32]], npt.NDArray[np.float64]]


class InverseHashMap:
    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.names: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def observe(self, features: Iterable[str], hashes: Sequence[int], weight_of: WeightsOf) -> None:
        """Remember ``features`` (with their full hashes); prune by ``weight_of`` (absolute
        weights of full hashes) when full."""
        names = self.names
        for f, h in zip(features, hashes, strict=True):
            if f not in names:
                names[f] = int(h)
        if len(names) >= 2 * self.capacity:
            self.prune(weight_of)

    def prune(self, weight_of: WeightsOf) -> None:
        if len(self.names) <= self.capacity:
            return
        keys = list(self.names)
        hashes = np.fromiter(self.names.values(), dtype=np.uint32, count=len(keys))
        magnitude = np.abs(weight_of(hashes))
        keep = np.argpartition(-magnitude, self.capacity - 1)[: self.capacity]
        self.names = {keys[i]: int(hashes[i]) for i in sorted(keep.tolist())}

    def heaviest(self, k: int, weight_of: WeightsOf) -> list[tuple[str, float]]:
        """The ``k`` named features with the largest weights in magnitude, heaviest first."""
        if not self.names or k <= 0:
            return []
        keys = list(self.names)
        hashes = np.fromiter(self.names.values(), dtype=np.uint32, count=len(keys))
        w = weight_of(hashes)
        order = np.argsort(-np.abs(w), kind="stable")[:k]
        return [(keys[i], float(w[i])) for i in order.tolist() if w[i] != 0]
