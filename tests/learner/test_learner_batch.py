"""Hashing feature rows for the learner gives the bidder's indices exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.features import hash_features_reference
from learner._ftrl import hash_rows
from learner.batch import hash_rows_reference, to_batch


@settings(max_examples=200)
@given(
    st.lists(st.lists(st.text(max_size=40), max_size=12), max_size=20),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_compiled_rows_match_the_reference(rows: list[list[str]], seed: int) -> None:
    try:
        want = [hash_features_reference(r, 32, seed) for r in rows]
    except UnicodeEncodeError:  # lone surrogates: both refuse them
        with pytest.raises(UnicodeEncodeError):
            hash_rows(rows, seed)
        return
    hashes, offsets = hash_rows(rows, seed)
    ref_hashes, ref_offsets = hash_rows_reference(rows, seed)
    assert hashes.dtype == np.uint32 and offsets.dtype == np.int64
    assert np.array_equal(hashes, ref_hashes) and np.array_equal(offsets, ref_offsets)
    for r, w in enumerate(want):
        assert np.array_equal(hashes[offsets[r] : offsets[r + 1]], w)


def test_tuples_and_bad_items() -> None:
    hashes, offsets = hash_rows([("a=1", "b=2"), ["c=3"]], 5)
    assert offsets.tolist() == [0, 2, 3]
    assert hashes.tolist() == hash_features_reference(["a=1", "b=2", "c=3"], 32, 5).tolist()
    with pytest.raises(TypeError, match="not a string"):
        hash_rows([["a", 3]])


def test_masking_gives_the_bidders_index() -> None:
    batch = to_batch([["country=US", "os=ios"]], [1.0], seed=3)
    assert (batch.hashes & ((1 << 20) - 1)).tolist() == hash_features_reference(
        ["country=US", "os=ios"], 20, 3
    ).tolist()
    with pytest.raises(ValueError, match="one label"):
        to_batch([["a"]], [1.0, 0.0])
