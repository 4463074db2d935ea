"""The model file (fleet.model): round trips, the reference predict, refusals, versions."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from fleet import model
from fleet.features import hash_features
from fleet.model import ModelFile, ModelFormatError, decode, encode, predict


def _model(bits: int = 10, seed: int = 9, version: int = 17) -> ModelFile:
    rng = np.random.default_rng(4)
    weights = (rng.standard_normal((2, 1 << bits)) * 0.3).astype(np.float32)
    return ModelFile(
        bits=bits, seed=seed, version=version, click_bias=-4.0, install_bias=-3.0, weights=weights
    )


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_model_round_trips() -> None:
    m = _model()
    data = encode(m)
    assert data[:4] == b"RTBM" and model.format_version(data) == model.DENSE == 1
    assert len(data) == 28 + 2 * 4 * 1024 + 4
    back = decode(data)
    assert (back.bits, back.seed, back.version) == (10, 9, 17)
    assert (back.click_bias, back.install_bias) == (-4.0, -3.0)
    assert np.array_equal(back.weights, m.weights)
    assert (back.feature_set, back.feature_set_version, back.market) == ("", 0, None)
    assert encode(back) == data


def test_predict_is_two_logistic_heads_over_hashed_features() -> None:
    m = _model()
    features = ["country=USA", "os=ios", "campaign=7", "campaign^hour=7^12"]
    idx = hash_features(features, m.bits, m.seed)
    zc = -4.0 + float(m.weights[0, idx].astype(np.float64).sum())
    zi = -3.0 + float(m.weights[1, idx].astype(np.float64).sum())
    p_click, p_install = predict(m, features)
    assert p_click == pytest.approx(1 / (1 + math.exp(-zc)), rel=1e-12)
    assert p_install == pytest.approx(1 / (1 + math.exp(-zi)), rel=1e-12)
    assert predict(decode(encode(m)), features) == (p_click, p_install)


def test_sums_are_clamped() -> None:
    big = ModelFile(
        bits=1,
        seed=0,
        version=1,
        click_bias=1e4,
        install_bias=-1e4,
        weights=np.zeros((2, 2), np.float32),
    )
    p_click, p_install = predict(big, ["x"])
    assert p_click == 1 / (1 + math.exp(-60)) and p_install == pytest.approx(math.exp(-60))


BAD: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("empty", lambda d: b""),
    ("magic only", lambda d: d[:5]),
    ("header only", lambda d: d[:28]),
    ("truncated", lambda d: d[:-1]),
    ("too long", lambda d: d + b"\0"),
    ("wrong magic", lambda d: b"RTBX" + d[4:]),
    ("a flipped bit", lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:]),
    ("version 0", lambda d: _recrc(d[:4] + struct.pack("<H", 0) + d[6:-4])),
    ("version 2 on a dense body", lambda d: _recrc(d[:4] + struct.pack("<H", 2) + d[6:-4])),
    ("version 65535", lambda d: _recrc(d[:4] + struct.pack("<H", 65535) + d[6:-4])),
    ("bits 0", lambda d: _recrc(d[:6] + bytes([0]) + d[7:-4])),
    ("bits 40", lambda d: _recrc(d[:6] + bytes([40]) + d[7:-4])),
    ("three heads", lambda d: _recrc(d[:7] + bytes([3]) + d[8:-4])),
    ("NaN weight", lambda d: _recrc(d[:28] + struct.pack("<f", math.nan) + d[32:-4])),
    ("infinite weight", lambda d: _recrc(d[:-8] + struct.pack("<f", math.inf) + d[-4:-4])),
    ("NaN bias", lambda d: _recrc(d[:20] + struct.pack("<f", math.nan) + d[24:-4])),
]


@pytest.mark.parametrize("mangle", [m for _, m in BAD], ids=[name for name, _ in BAD])
def test_malformed_bytes_are_a_format_error(mangle: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ModelFormatError):
        decode(mangle(encode(_model())))


def test_the_error_says_what_is_wrong() -> None:
    data = encode(_model())
    with pytest.raises(ModelFormatError, match="bad magic"):
        decode(b"GIF89a" + data[6:])
    with pytest.raises(ModelFormatError, match="format 7 is not supported"):
        decode(_recrc(data[:4] + struct.pack("<H", 7) + data[6:-4]))
    with pytest.raises(ModelFormatError, match="checksum"):
        decode(data[:-1] + bytes([data[-1] ^ 0xFF]))


def test_impossible_models_cannot_even_be_built() -> None:
    with pytest.raises(ModelFormatError):
        ModelFile(bits=4, seed=0, version=1, click_bias=0, install_bias=0, weights=np.zeros((2, 8)))
    with pytest.raises(ModelFormatError):
        ModelFile(
            bits=1,
            seed=0,
            version=1,
            click_bias=0,
            install_bias=0,
            weights=np.array([[0.0, math.nan], [0.0, 0.0]], np.float32),
        )


def test_version_2_decodes_beside_version_1_and_predicts_the_same() -> None:
    """decode dispatches on the version: a sparse file of the same weights gives the same model,
    with its feature set and market table; version 1 still loads."""
    dense = _model(bits=6)
    sparse = model.SparseModel(
        version=dense.version,
        bits=dense.bits,
        seed=dense.seed,
        feature_set="v2-test",
        feature_set_version=3,
        click=model.SparseHead.from_dense(dense.click_bias, dense.weights[0]),
        install=model.SparseHead.from_dense(dense.install_bias, dense.weights[1]),
        market=model.MarketTable(model.MarketSegment(13.0, 0.5, 1.0)),
    )
    v2 = decode(model.encode_sparse(sparse))
    assert (v2.feature_set, v2.feature_set_version) == ("v2-test", 3)
    assert v2.market is not None and v2.market.params("any") == (13.0, 0.5)
    np.testing.assert_array_equal(v2.weights, dense.weights)
    feats = ["a=1", "b=2", "c=3"]
    assert predict(v2, feats) == predict(dense, feats)
    v1 = decode(encode(dense))
    assert v1.version == dense.version and v1.feature_set == "" and v1.market is None
