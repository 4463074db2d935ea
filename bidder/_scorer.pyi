from collections.abc import Callable

import numpy as np
import numpy.typing as npt

def logistic_positions(
    positions: list[int],
    static: npt.NDArray[np.float64],
    ids: npt.NDArray[np.intp],
    tables: list[npt.NDArray[np.float64]],
    miss: Callable[[int, int], complex],
    z0_click: float,
    z0_install: float,
) -> list[tuple[float, float]]: ...
