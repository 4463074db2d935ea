"""The bidder: the OpenRTB endpoint's pure core (request model, bid pipeline, response).

The service (``bidder.service``) wires ``Pipeline`` to HTTP, caches, buses and metrics.
"""

from bidder.creative import CreativePerformance, NoPerformance
from bidder.errors import BadRequest, BidderError, DeadlineExceeded, ModelFormatError
from bidder.pipeline import (
    Answer,
    BidSummary,
    FrequencyReader,
    Pipeline,
    PipelineSettings,
    SpendGate,
    market_segment,
)
from bidder.pricing import LogNormalMarket, MarketPriceModel
from bidder.scoring import HashedLinearModel, Model, PriorModel

__all__ = [
    "Answer",
    "BadRequest",
    "BidSummary",
    "BidderError",
    "CreativePerformance",
    "DeadlineExceeded",
    "FrequencyReader",
    "HashedLinearModel",
    "LogNormalMarket",
    "MarketPriceModel",
    "Model",
    "ModelFormatError",
    "NoPerformance",
    "Pipeline",
    "PipelineSettings",
    "PriorModel",
    "SpendGate",
    "market_segment",
]
