from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

def select_runs(
    wanted: npt.NDArray[np.uint64],
    run_entries: npt.NDArray[np.intp],
    entry_words: npt.NDArray[np.uint64],
    word_rows: npt.NDArray[np.int32],
    max_bid_col: npt.NDArray[np.int64],
    id_col: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.int64]
]: ...
def exp_factors(tops: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def imp_bounds(
    flat: npt.NDArray[np.intp],
    starts: npt.NDArray[np.intp],
    max_bids: npt.NDArray[np.int64],
    floors: npt.NDArray[np.int64],
    table: npt.NDArray[np.float64],
    logistic: bool,
    click: float,
    install: float,
    goal_codes: npt.NDArray[np.int8],
    goal_prices: npt.NDArray[np.int64],
    low_min: int,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.float64], int]: ...

class KeyOrder:
    finite: int
    def __init__(self, exps: npt.NDArray[np.float64], bounds: npt.NDArray[np.float64]) -> None: ...
    def take(self, count: int) -> tuple[list[int], list[float]]: ...

def entry_bounds(
    entries: npt.NDArray[np.intp],
    max_bids: npt.NDArray[np.int64],
    floors: npt.NDArray[np.int64],
    bound_rows: npt.NDArray[np.float64],
    logistic: bool,
    click: float,
    install: float,
    goal_codes: npt.NDArray[np.int8],
    goal_prices: npt.NDArray[np.int64],
    low_min: int,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.float64], int]: ...
def best_values(
    predictions: npt.NDArray[np.float64],
    flat: npt.NDArray[np.intp],
    starts: npt.NDArray[np.intp],
    goal_codes: npt.NDArray[np.int8],
    goal_prices: npt.NDArray[np.int64],
    lows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]: ...

RACE_WON: int
RACE_CAPPED: int
RACE_EVERYTHING: int

def race_loop(
    seed: int,
    bounds: npt.NDArray[np.float64],
    price: Callable[[list[int]], Sequence[float | None]],
    refine: Callable[[list[int]], Sequence[float]] | None,
    excluded: Callable[[int], bool] | None,
    limit: int,
    batch: int,
) -> tuple[int, int]: ...
def exponential_floors(u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def first_keys(seed: int, bounds: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
