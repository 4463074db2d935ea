import numpy as np
import numpy.typing as npt

def hash_rows(
    statics: list[tuple[str, ...]], prefixes: list[tuple[str, ...]], seed: int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]: ...
def hash_strings(features: list[str], seed: int) -> npt.NDArray[np.uint32]: ...
def static_sums(
    hashes: npt.NDArray[np.uint32], weights: npt.NDArray[np.float32], mask: int
) -> npt.NDArray[np.float64]: ...
def score(
    positions: npt.NDArray[np.intp],
    static: npt.NDArray[np.float64],
    states: npt.NDArray[np.uint32],
    suffixes: list[str],
    weights: npt.NDArray[np.float32],
    mask: int,
    z0_click: float,
    z0_install: float,
    out: npt.NDArray[np.float64],
) -> None: ...
def bound(
    positions: npt.NDArray[np.intp],
    static: npt.NDArray[np.float64],
    z0_click: float,
    z0_install: float,
    cross_click: float,
    cross_install: float,
    out: npt.NDArray[np.float64],
) -> None: ...

class RunScorer:
    def __init__(
        self,
        cand_runs: npt.NDArray[np.intp],
        lows: npt.NDArray[np.int64],
        run_starts: npt.NDArray[np.intp],
        run_positions: npt.NDArray[np.intp],
        static: npt.NDArray[np.float64],
        states: npt.NDArray[np.uint32],
        encoded: list[bytes],
        pairs: npt.NDArray[np.float32],
        mask: int,
        z0_click: float,
        z0_install: float,
        goal_codes: npt.NDArray[np.int8],
        goal_prices: npt.NDArray[np.int64],
    ) -> None: ...
    def __call__(self, js: list[int]) -> list[float]: ...
