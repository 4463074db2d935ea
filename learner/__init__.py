"""The learner: joined training examples, FTRL-Proximal (compiled), an estimator grid judged
by progressive validation, the censored market-price model, checkpoints and the sparse model
export. ``OnlineLearner`` is the pure core; ``learner.train`` trains it offline from files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.model import (
        MarketSegment,
        MarketTable,
        ModelFormatError,
        SparseHead,
        SparseModel,
        decode_sparse,
        encode_sparse,
    )
    from learner.checkpoint import load_checkpoint, save_checkpoint
    from learner.errors import BadParameters, BadRecord, CheckpointError, LearnerError
    from learner.ftrl import FtrlParams, FtrlReference, Logistic, Loss, Squared
    from learner.grid import EstimatorGrid, GridSettings, Selection
    from learner.join import Example, Joiner, JoinSettings, PriceObservation
    from learner.market import CensoredLogNormalMarket, MarketSettings
    from learner.online import FEATURE_SET, FEATURE_SET_VERSION, LearnerConfig, OnlineLearner
    from learner.settings import LearnerSettings

# Submodules load on first use: reading the registry (learner.registration) imports this
# package, and must not load the learner, its settings or numpy.
_MODULES = {
    "load_checkpoint": "learner.checkpoint",
    "save_checkpoint": "learner.checkpoint",
    "BadParameters": "learner.errors",
    "BadRecord": "learner.errors",
    "CheckpointError": "learner.errors",
    "LearnerError": "learner.errors",
    "FtrlParams": "learner.ftrl",
    "FtrlReference": "learner.ftrl",
    "Logistic": "learner.ftrl",
    "Loss": "learner.ftrl",
    "Squared": "learner.ftrl",
    "EstimatorGrid": "learner.grid",
    "GridSettings": "learner.grid",
    "Selection": "learner.grid",
    "Example": "learner.join",
    "Joiner": "learner.join",
    "JoinSettings": "learner.join",
    "PriceObservation": "learner.join",
    "CensoredLogNormalMarket": "learner.market",
    "MarketSettings": "learner.market",
    "FEATURE_SET": "learner.online",
    "FEATURE_SET_VERSION": "learner.online",
    "LearnerConfig": "learner.online",
    "OnlineLearner": "learner.online",
    "LearnerSettings": "learner.settings",
    "MarketSegment": "fleet.model",
    "MarketTable": "fleet.model",
    "ModelFormatError": "fleet.model",
    "SparseHead": "fleet.model",
    "SparseModel": "fleet.model",
    "decode_sparse": "fleet.model",
    "encode_sparse": "fleet.model",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FEATURE_SET",
    "FEATURE_SET_VERSION",
    "BadParameters",
    "BadRecord",
    "CensoredLogNormalMarket",
    "CheckpointError",
    "EstimatorGrid",
    "Example",
    "FtrlParams",
    "FtrlReference",
    "GridSettings",
    "JoinSettings",
    "Joiner",
    "LearnerConfig",
    "LearnerError",
    "LearnerSettings",
    "Logistic",
    "Loss",
    "MarketSegment",
    "MarketSettings",
    "MarketTable",
    "ModelFormatError",
    "OnlineLearner",
    "PriceObservation",
    "Selection",
    "SparseHead",
    "SparseModel",
    "Squared",
    "decode_sparse",
    "encode_sparse",
    "load_checkpoint",
    "save_checkpoint",
]
