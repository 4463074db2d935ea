"""The learner: joined training examples, FTRL-Proximal (compiled), an estimator grid judged
by progressive validation, the censored market-price model, checkpoints and the sparse model
export. ``OnlineLearner`` is the pure core; ``learner.train`` trains it offline from files.
"""

from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.errors import BadParameters, BadRecord, CheckpointError, LearnerError
from learner.ftrl import FtrlParams, FtrlReference, Logistic, Loss, Squared
from learner.grid import EstimatorGrid, GridSettings, Selection
from learner.join import Example, Joiner, JoinSettings, PriceObservation
from learner.market import CensoredLogNormalMarket, MarketSettings
from learner.modelfile import (
    MarketSegment,
    MarketTable,
    ModelFormatError,
    SparseHead,
    SparseModel,
    decode_sparse,
    encode_sparse,
)
from learner.online import FEATURE_SET, FEATURE_SET_VERSION, LearnerConfig, OnlineLearner
from learner.settings import LearnerSettings

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
