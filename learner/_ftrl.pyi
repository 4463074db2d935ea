from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from learner.ftrl import FtrlParams, FtrlState

class Ftrl:
    params: FtrlParams
    state: npt.NDArray[np.float64]
    scale: float
    examples: int
    def __init__(self, params: FtrlParams) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def learn(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        labels: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]: ...
    def predict(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]: ...
    def learn_one(
        self,
        indices: Sequence[int],
        values: Sequence[float] | None = None,
        label: float = 0.0,
        weight: float = 1.0,
    ) -> float: ...
    def predict_one(
        self, indices: Sequence[int], values: Sequence[float] | None = None
    ) -> float: ...
    def weights(self) -> tuple[float, npt.NDArray[np.float64]]: ...
    def get_state(self) -> FtrlState: ...
    def set_state(self, state: FtrlState) -> None: ...

def hash_rows(
    rows: Sequence[Sequence[str]], seed: int = 0
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]: ...
