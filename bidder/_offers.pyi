from collections.abc import Callable, Sequence

from bidder.offers import Chosen, OfferRow, Segment
from bidder.openrtb import Deal
from bidder.pricing import MarketPriceModel, Shader
from bidder.targeting import Candidate
from fleet.config import Campaign

def select(
    candidates: Sequence[Candidate],
    imp_floor: int,
    request_at: int,
    deal_floor: Callable[[Deal], int | None],
    capped: Callable[[Campaign], str],
    choose: Callable[[list[int]], int],
    drops: dict[str, int],
    out: Chosen,
) -> None: ...
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
