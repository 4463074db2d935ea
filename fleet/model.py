"""The model file: what the learner writes and the bidder reads, and neither imports the other.

A model is two logistic heads (click, then install given a click) over features hashed with
MurmurHash3 (``fleet.features``) into ``2**bits`` slots:

    p = 1 / (1 + exp(-(bias + sum of the weights at the features' indices))), per head,

the sum clamped to +-60 (``predict``, the reference every faster scorer is tested against).

Every file starts with the magic ``b"RTBM"`` and a format version (uint16, little-endian);
``decode`` reads those six bytes and hands the rest to that version's decoder, so a new version
is a new decoder in ``_DECODERS`` and files of the older versions keep loading. Each decoder
returns the same ``ModelFile`` (weights dense in memory, whatever the file holds); fields a
version does not carry keep their defaults.

Version 1 (dense), little-endian:

    offset  size         field
    0       4            magic b"RTBM"
    4       2            format version (uint16) = 1
    6       1            bits (uint8, 1..28): each head has 2**bits weights
    7       1            heads (uint8) = 2: click, then install given click
    8       4            hash seed (uint32) for MurmurHash3
    12      8            model version (uint64), increasing
    20      4            click bias (float32)
    24      4            install bias (float32)
    28      4*2**bits    click weights (float32)
    ...     4*2**bits    install weights (float32)
    end     4            CRC-32 (zlib) of every byte before it (uint32)

Room for a sparse version 2: only the non-zero weights (index, click, install), the name and
version of the feature set the learner hashed, hash bits and seed, and an optional market-price
model section; ``ModelFile.feature_set``, ``feature_set_version`` and ``market`` are where it
lands (version 1 leaves them empty).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fleet.errors import FleetError
from fleet.features import hash_features

MAGIC: Final = b"RTBM"
DENSE: Final = 1  # the format version ``encode`` writes
MAX_BITS: Final = 28
HEADS: Final = 2
_PREFIX: Final = struct.Struct("<4sH")
_V1_HEADER: Final = struct.Struct("<4sHBBIQff")
_CRC: Final = struct.Struct("<I")


class ModelFormatError(FleetError):
    """Model bytes that cannot be loaded: wrong magic, unknown version, truncated or too long,
    a bad checksum, an impossible shape, non-finite weights (upstream: the learner)."""


@dataclass(frozen=True, eq=False)
class ModelFile:
    """A model as stored: ``weights`` is float32 of shape (2, 2**bits), click then install."""

    bits: int
    seed: int
    version: int
    click_bias: float
    install_bias: float
    weights: npt.NDArray[np.float32]
    feature_set: str = ""  # the learner's feature set, by name (from version 2)
    feature_set_version: int = 0
    market: bytes | None = None  # an optional market-price model section (from version 2)

    def __post_init__(self) -> None:
        check_shape(self.bits, self.weights)
        if not (
            np.isfinite(self.weights).all()
            and math.isfinite(self.click_bias)
            and math.isfinite(self.install_bias)
        ):
            raise ModelFormatError("model has non-finite weights")
        if not 0 <= self.seed < 1 << 32 or not 0 <= self.version < 1 << 64:
            raise ModelFormatError("hash seed must fit 32 bits, the model version 64")


def check_shape(bits: int, weights: npt.NDArray[np.float32]) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ModelFormatError(f"bits must be in 1..{MAX_BITS}, not {bits}")
    size = 1 << bits
    if weights.shape != (HEADS, size):
        raise ModelFormatError(f"weights must have 2**{bits} = {size} entries per head")


def sigmoid(z: float) -> float:
    """The logistic function with the sum clamped to +-60, as every scorer computes it."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-min(z, 60.0)))
    e = math.exp(max(z, -60.0))
    return e / (1.0 + e)


def predict(model: ModelFile, features: list[str]) -> tuple[float, float]:
    """(p_click, p_install given a click) of one impression's features: the reference."""
    return predict_weights(
        model.weights, model.click_bias, model.install_bias, model.bits, model.seed, features
    )


def predict_weights(
    weights: npt.NDArray[np.float32],
    click_bias: float,
    install_bias: float,
    bits: int,
    seed: int,
    features: list[str],
) -> tuple[float, float]:
    """``predict`` over the parts of a model (the bidder keeps them in its own object)."""
    idx = hash_features(features, bits, seed)
    zc = click_bias + float(weights[0, idx].sum(dtype=np.float64))
    zi = install_bias + float(weights[1, idx].sum(dtype=np.float64))
    return sigmoid(zc), sigmoid(zi)


# -- encoding -----------------------------------------------------------------------------------


def encode(model: ModelFile) -> bytes:
    """The model as a version-1 (dense) file."""
    header = _V1_HEADER.pack(
        MAGIC,
        DENSE,
        model.bits,
        HEADS,
        model.seed,
        model.version,
        model.click_bias,
        model.install_bias,
    )
    body = header + model.weights.astype("<f4", copy=False).tobytes()
    return body + _CRC.pack(zlib.crc32(body))


# -- decoding -----------------------------------------------------------------------------------


def format_version(data: bytes) -> int:
    """The format version of model bytes; ModelFormatError when they are not a model."""
    if len(data) < _PREFIX.size:
        raise ModelFormatError("model bytes too short")
    magic, fmt = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ModelFormatError("not a compiled model (bad magic)")
    return int(fmt)


def decode(data: bytes) -> ModelFile:
    """Raises ModelFormatError on anything but a complete, intact model of a known version."""
    fmt = format_version(data)
    decoder = _DECODERS.get(fmt)
    if decoder is None:
        known = ", ".join(str(v) for v in sorted(_DECODERS))
        raise ModelFormatError(f"model format {fmt} is not supported (known: {known})")
    return decoder(data)


def _checked_crc(data: bytes) -> None:
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(memoryview(data)[: len(data) - _CRC.size]) != crc:
        raise ModelFormatError("model checksum mismatch")


def _decode_dense(data: bytes) -> ModelFile:
    if len(data) < _V1_HEADER.size + _CRC.size:
        raise ModelFormatError("model bytes too short")
    _, _, bits, heads, seed, version, cb, ib = _V1_HEADER.unpack_from(data)
    if not 1 <= bits <= MAX_BITS or heads != HEADS:
        raise ModelFormatError(f"bad model shape: bits={bits} heads={heads}")
    size = 1 << bits
    expected = _V1_HEADER.size + HEADS * 4 * size + _CRC.size
    if len(data) != expected:
        raise ModelFormatError(f"model is {len(data)} bytes, expected {expected}")
    _checked_crc(data)
    weights = np.frombuffer(data, dtype="<f4", count=HEADS * size, offset=_V1_HEADER.size)
    return ModelFile(
        bits=bits,
        seed=seed,
        version=version,
        click_bias=cb,
        install_bias=ib,
        weights=weights.astype(np.float32).reshape(HEADS, size),
    )


_DECODERS: Final[dict[int, Callable[[bytes], ModelFile]]] = {DENSE: _decode_dense}
