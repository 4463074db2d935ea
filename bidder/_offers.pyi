from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bidder.offers import Chosen, OfferRow, Segment
from bidder.pricing import MarketPriceModel, Shader
from fleet.config import Campaign

def price_offers(
    chosen: Chosen,
    predictions: list[tuple[float, float]],
    segment_of: Callable[[int], Segment],
    limit: int,
    margin: float,
    min_bid: int,
    market: MarketPriceModel,
    shader: Shader,
    allow: Callable[[Campaign, int, float, float], bool],
    wallclock: float,
    drops: dict[str, int],
    campaign_ids: list[int],
    weights: list[float],
    rows: list[OfferRow],
) -> None: ...
def race_exponentials(seed: int, n: int) -> npt.NDArray[np.float64]: ...
