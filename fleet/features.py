"""Stable feature hashing shared by the bidder and the learner.

Python's ``hash()`` differs between processes, so every index that crosses a process boundary
comes from MurmurHash3 (x86, 32-bit, seed 0). The compiled twin in ``fleet._features`` is used
when it is built; this module's pure-Python functions are the reference it is tested against.
"""

from __future__ import annotations

import mmh3
import numpy as np
import numpy.typing as npt

DEFAULT_BITS = 20

# The feature set the bidder computes (bidder.scoring: request, static and cross features), by
# name and version: a model file says which set it was learnt on, and a bidder refuses a model
# of another set. Bump the version whenever the feature strings change.
SCORING_FEATURE_SET = "bidder.scoring"
# 2: the campaign crossed with each of the user's segments (``campaign^seg``)
SCORING_FEATURE_SET_VERSION = 2


def hash_one_reference(feature: str, seed: int = 0) -> int:
    return int(mmh3.hash(feature, seed, signed=False))


def hash_features_reference(
    features: list[str], bits: int = DEFAULT_BITS, seed: int = 0
) -> npt.NDArray[np.uint32]:
    mask = (1 << bits) - 1
    return np.fromiter(
        (mmh3.hash(f, seed, signed=False) & mask for f in features),
        dtype=np.uint32,
        count=len(features),
    )


try:
    from fleet._features import hash_features as _compiled_hash_features
    from fleet._features import hash_one as _compiled_hash_one

    COMPILED = True
except ImportError:  # not built: the reference serves, only slower
    COMPILED = False


def hash_one(feature: str, seed: int = 0) -> int:
    if COMPILED:
        return int(_compiled_hash_one(feature, seed))
    return hash_one_reference(feature, seed)


def hash_features(
    features: list[str], bits: int = DEFAULT_BITS, seed: int = 0
) -> npt.NDArray[np.uint32]:
    """Indices in ``[0, 2**bits)`` for each feature string."""
    if COMPILED:
        return _compiled_hash_features(features, bits, seed)
    return hash_features_reference(features, bits, seed)
