"""The sparse model format (version 2): round trips, and every malformed input refused with a
ModelFormatError that says what is wrong."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.model import (
    MarketSegment,
    MarketTable,
    ModelFormatError,
    SparseHead,
    SparseModel,
    decode_sparse,
    encode_sparse,
    format_version,
)


def model(bits: int = 12, nonzero: int = 50, seed: int = 1) -> SparseModel:
    rng = np.random.default_rng(seed)
    dense = np.zeros(1 << bits)
    dense[rng.choice(1 << bits, nonzero, replace=False)] = rng.normal(size=nonzero)
    dense2 = np.zeros(1 << bits)
    dense2[rng.choice(1 << bits, nonzero // 2, replace=False)] = rng.normal(size=nonzero // 2)
    market = MarketTable(
        MarketSegment(14.0, 0.8, 1234.5),
        {
            "2|ex1|US|320x50": MarketSegment(14.2, 0.6, 99.0),
            "1|ex2|DE|video": MarketSegment(15.0, 0.4, 3.0),
        },
    )
    return SparseModel(
        version=7,
        bits=bits,
        seed=42,
        feature_set="bidder.scoring",
        feature_set_version=1,
        click=SparseHead.from_dense(-4.5, dense),
        install=SparseHead.from_dense(-3.0, dense2),
        market=market,
    )


def test_round_trip() -> None:
    m = model()
    data = encode_sparse(m)
    assert format_version(data) == 2
    back = decode_sparse(data)
    assert (back.version, back.bits, back.seed) == (7, 12, 42)
    assert (back.feature_set, back.feature_set_version) == ("bidder.scoring", 1)
    for a, b in ((m.click, back.click), (m.install, back.install)):
        assert a.bias == b.bias
        assert np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.weights, b.weights)
        assert np.array_equal(a.dense(12), b.dense(12))
    assert back.market == m.market
    assert back.nonzero == 75
    # only the non-zero weights: 8 bytes each plus a small header and the market table
    assert len(data) < 75 * 8 + 300
    assert encode_sparse(back) == data


def test_dense_round_trip_keeps_float32_values() -> None:
    dense = np.array([0.0, 1e-50, 0.5, -2.0], dtype=np.float64)  # 1e-50 is 0 in float32
    head = SparseHead.from_dense(0.1, dense)
    assert head.indices.tolist() == [2, 3]
    assert head.dense(2).tolist() == [0.0, 0.0, 0.5, -2.0]


def test_market_table_falls_back_to_overall() -> None:
    t = model().market
    assert t.params("2|ex1|US|320x50") == (14.2, 0.6)
    assert t.params("unknown") == (14.0, 0.8)
    assert t.p_win("unknown", int(np.exp(14.0))) == pytest.approx(0.5, abs=1e-6)
    assert t.p_win("x", 0) == 0.0


def test_empty_model() -> None:
    empty = SparseModel(
        0,
        1,
        0,
        "",
        0,
        SparseHead.from_dense(0.0, np.zeros(2)),
        SparseHead.from_dense(0.0, np.zeros(2)),
        MarketTable(MarketSegment(0.0, 1.0)),
    )
    assert decode_sparse(encode_sparse(empty)) == empty


def resign(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_every_truncation_is_refused() -> None:
    data = encode_sparse(model(bits=6, nonzero=5))
    for cut in range(len(data)):
        with pytest.raises(ModelFormatError):
            decode_sparse(data[:cut])
        # even with a valid checksum over the truncated bytes
        if cut >= 4:
            with pytest.raises(ModelFormatError):
                decode_sparse(resign(data[: cut - 4]))


def test_flipped_bits_fail_the_checksum() -> None:
    data = bytearray(encode_sparse(model()))
    data[100] ^= 0x10
    with pytest.raises(ModelFormatError, match="checksum"):
        decode_sparse(bytes(data))


def test_bad_magic_and_versions() -> None:
    data = encode_sparse(model())
    with pytest.raises(ModelFormatError, match="magic"):
        decode_sparse(b"XXXX" + data[4:])
    with pytest.raises(ModelFormatError, match="format 1"):
        decode_sparse(resign(data[:4] + struct.pack("<H", 1) + data[6:-4]))
    with pytest.raises(ModelFormatError, match="shape"):
        decode_sparse(resign(data[:6] + bytes([29]) + data[7:-4]))
    with pytest.raises(ModelFormatError, match="shape"):
        decode_sparse(resign(data[:7] + bytes([3]) + data[8:-4]))


def _corrupt_head(mutate) -> bytes:  # type: ignore[no-untyped-def]
    m = model(bits=6, nonzero=4)
    body = bytearray(encode_sparse(m)[:-4])
    start = 26 + len(m.feature_set) + 8  # after the header, name, click bias and count
    mutate(body, start, len(m.click))
    return resign(bytes(body))


def test_bad_indices_and_weights() -> None:
    def unordered(body: bytearray, at: int, k: int) -> None:
        body[at : at + 8] = body[at + 4 : at + 8] + body[at : at + 4]

    def too_big(body: bytearray, at: int, k: int) -> None:
        body[at : at + 4] = struct.pack("<I", 64)

    def nan_weight(body: bytearray, at: int, k: int) -> None:
        body[at + 4 * k : at + 4 * k + 4] = struct.pack("<f", float("nan"))

    def zero_weight(body: bytearray, at: int, k: int) -> None:
        body[at + 4 * k : at + 4 * k + 4] = struct.pack("<f", 0.0)

    for mutate, reason in (
        (unordered, "increasing"),
        (too_big, "below"),
        (nan_weight, "finite"),
        (zero_weight, "non-zero"),
    ):
        with pytest.raises(ModelFormatError, match=reason):
            decode_sparse(_corrupt_head(mutate))


def test_bad_market_and_names() -> None:
    m = model(bits=6, nonzero=4)

    with pytest.raises(ModelFormatError, match="sigma"):
        encode_sparse(dataclasses.replace(m, market=MarketTable(MarketSegment(1.0, 0.0))))
    with pytest.raises(ModelFormatError, match="sigma"):
        encode_sparse(
            dataclasses.replace(
                m,
                market=MarketTable(
                    MarketSegment(1.0, 1.0), {"a": MarketSegment(float("inf"), 1.0)}
                ),
            )
        )
    with pytest.raises(ModelFormatError, match="longer"):
        encode_sparse(dataclasses.replace(m, feature_set="x" * 2000))
    with pytest.raises(ModelFormatError, match="bits"):
        encode_sparse(dataclasses.replace(m, bits=29))
    # a name that is not UTF-8
    data = encode_sparse(dataclasses.replace(m, feature_set="ab"))
    with pytest.raises(ModelFormatError, match="UTF-8"):
        decode_sparse(resign(data[:26] + b"\xff\xfe" + data[28:-4]))
    # trailing bytes after the market table
    with pytest.raises(ModelFormatError, match="unexpected"):
        decode_sparse(resign(data[:-4] + b"\0\0"))
    # a segment that appears twice
    two = encode_sparse(
        dataclasses.replace(
            m,
            market=MarketTable(
                MarketSegment(1.0, 1.0),
                {"aa": MarketSegment(1.0, 1.0), "ab": MarketSegment(1.0, 1.0)},
            ),
        )
    )
    dup = two[:-4].replace(b"ab", b"aa")
    with pytest.raises(ModelFormatError, match="twice"):
        decode_sparse(resign(dup))


names = st.text(max_size=20)
segments = st.builds(
    MarketSegment,
    st.floats(-50, 50),
    st.floats(0.001, 10),
    st.floats(0, 1e9),
)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    names,
    st.lists(st.floats(-10, 10, width=32).filter(lambda x: x != 0), max_size=40),
    st.dictionaries(names, segments, max_size=5),
    st.randoms(use_true_random=False),
)
def test_any_model_round_trips(  # type: ignore[no-untyped-def]
    bits, version, seed, feature_set, weights, market, rnd
) -> None:
    size = 1 << bits
    dense = np.zeros(size)
    slots = rnd.sample(range(size), min(len(weights), size))
    dense[slots] = weights[: len(slots)]
    m = SparseModel(
        version,
        bits,
        seed,
        feature_set,
        3,
        SparseHead.from_dense(0.5, dense),
        SparseHead.from_dense(-1.0, dense[::-1].copy()),
        MarketTable(MarketSegment(1.0, 2.0, 3.0), market),
    )
    assert decode_sparse(encode_sparse(m)) == m


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_bytes_only_ever_raise_model_format_errors(data) -> None:  # type: ignore[no-untyped-def]
    raw = bytearray(encode_sparse(model(bits=5, nonzero=6)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    body = bytes(raw[:-4])
    for candidate in (bytes(raw), resign(body)):  # with and without a valid checksum
        try:
            decoded = decode_sparse(candidate)
        except ModelFormatError:
            continue
        assert decode_sparse(encode_sparse(decoded)) == decoded  # what loads is consistent
