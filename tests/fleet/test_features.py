"""The compiled feature hasher must agree with the mmh3 reference bit for bit: the bidder
scores with one and the learner trains with the other."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import features


def test_compiled_twin_is_built() -> None:
    # `make test` builds the Cython parts first; a silent fallback would hide a broken build.
    assert features.COMPILED


@settings(max_examples=300)
@given(st.text(max_size=80), st.integers(min_value=0, max_value=2**32 - 1))
def test_hash_one_parity(text: str, seed: int) -> None:
    assert features.hash_one(text, seed) == features.hash_one_reference(text, seed)


@given(st.lists(st.text(max_size=30), max_size=60), st.integers(min_value=1, max_value=32))
def test_hash_features_parity(items: list[str], bits: int) -> None:
    got = features.hash_features(items, bits)
    want = features.hash_features_reference(items, bits)
    assert got.dtype == np.uint32
    assert np.array_equal(got, want)
    assert bits == 32 or all(int(x) < 2**bits for x in got)


def test_known_vector() -> None:
    # MurmurHash3_x86_32("hello", seed 0) is a published test vector.
    assert features.hash_one("hello") == 0x248BFA47
