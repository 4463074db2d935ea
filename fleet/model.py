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

Version 2 (sparse, what the learner exports): a learnt model with L1 regularisation is mostly
zeros, so version 2 stores only the non-zero weights, says which feature set its indices come
from (a bidder that cannot compute that set must refuse the model), and carries the learnt
market-price model. ``decode`` gives it as a ``ModelFile`` (``feature_set``,
``feature_set_version`` and ``market`` filled; version 1 leaves them empty); ``decode_sparse``
gives the ``SparseModel`` as written. Little-endian:

    offset  size        field
    0       4           magic b"RTBM"
    4       2           format version (uint16) = 2
    6       1           bits (uint8, 1..28): indices are in [0, 2**bits)
    7       1           heads (uint8) = 2: click, then install given click
    8       4           hash seed (uint32) for MurmurHash3
    12      8           model version (uint64), increasing
    20      4           feature-set version (uint32)
    24      2           feature-set name length L (uint16), then L bytes of UTF-8
    then, per head:
            4           bias (float32)
            4           count k (uint32)
            4*k         indices (uint32), strictly increasing, each < 2**bits
            4*k         weights (float32), finite and non-zero
    then the market model:
            24          the overall segment: mu, sigma, weight (float64 each)
            4           segment count S (uint32); per segment: name length (uint16), the name
                        (UTF-8), mu, sigma, weight (float64 each); names distinct
    end     4           CRC-32 (zlib) of every byte before it (uint32)

mu and sigma are those of ln(competing price in micros CPM): P(win | bid) =
Phi((ln bid - mu) / sigma), the shape ``bidder.pricing`` prices with; a segment the table does
not know gets the overall one. ``weight`` is the evidence behind a segment (observations, after
decay), for operators.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from fleet.errors import FleetError
from fleet.features import hash_features

MAGIC: Final = b"RTBM"
DENSE: Final = 1  # the format version ``encode`` writes
SPARSE_FORMAT_VERSION: Final = 2  # the one ``encode_sparse`` writes
MAX_NAME_BYTES: Final = 1024
MAX_BITS: Final = 28
HEADS: Final = 2

# The rates a bidder scores with before any learnt model arrives (``bidder.scoring.PriorModel``)
# and where the learner's estimators start (their bias at the logit of the rate): a first model
# learnt from a few clicks then moves away from the prior, instead of from 0.5.
PRIOR_CLICK_RATE: Final = 0.01
PRIOR_INSTALL_RATE: Final = 0.03
_PREFIX: Final = struct.Struct("<4sH")
_V1_HEADER: Final = struct.Struct("<4sHBBIQff")
_CRC: Final = struct.Struct("<I")
_V2_HEADER: Final = struct.Struct("<4sHBBIQIH")
_HEAD: Final = struct.Struct("<fI")
_SEGMENT: Final = struct.Struct("<ddd")
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")
_SQRT2: Final = math.sqrt(2.0)


class ModelFormatError(FleetError):
    """Model bytes that cannot be loaded: wrong magic, unknown version, truncated or too long,
    a bad checksum, an impossible shape, non-finite weights (upstream: the learner)."""


@dataclass(frozen=True, slots=True, eq=False)
class SparseHead:
    """One logistic head: its bias and its non-zero weights by hash index."""

    bias: float
    indices: npt.NDArray[np.uint32]
    weights: npt.NDArray[np.float32]

    @classmethod
    def from_dense(cls, bias: float, weights: npt.NDArray[np.floating]) -> SparseHead:
        """The non-zero entries of ``weights`` (after rounding to float32)."""
        w32 = np.asarray(weights).astype(np.float32)
        idx = np.flatnonzero(w32).astype(np.uint32)
        return cls(float(np.float32(bias)), idx, w32[idx])

    def dense(self, bits: int) -> npt.NDArray[np.float32]:
        out = np.zeros(1 << bits, dtype=np.float32)
        out[self.indices] = self.weights
        return out

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseHead):
            return NotImplemented
        return (
            self.bias == other.bias
            and np.array_equal(self.indices, other.indices)
            and np.array_equal(self.weights, other.weights)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class MarketSegment:
    mu: float
    sigma: float
    weight: float = 0.0


@dataclass(frozen=True, slots=True)
class MarketTable:
    """The learnt log-normal of the competing price per market segment (the bidder's segment
    names: ``auction type|exchange|country|format``), with an overall fallback."""

    overall: MarketSegment
    segments: Mapping[str, MarketSegment] = field(default_factory=dict)

    def params(self, segment: str) -> tuple[float, float]:
        s = self.segments.get(segment, self.overall)
        return s.mu, s.sigma

    def p_win(self, segment: str, bid_micros: int) -> float:
        if bid_micros <= 0:
            return 0.0
        mu, sigma = self.params(segment)
        return 0.5 * math.erfc(-((math.log(bid_micros) - mu) / sigma) / _SQRT2)


@dataclass(frozen=True, slots=True)
class SparseModel:
    version: int
    bits: int
    seed: int
    feature_set: str
    feature_set_version: int
    click: SparseHead
    install: SparseHead
    market: MarketTable

    @property
    def nonzero(self) -> int:
        return len(self.click) + len(self.install)


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
    market: MarketTable | None = None  # the learnt market-price model (from version 2)

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


# -- version 2 (sparse) ------------------------------------------------------------------------


def _check_segment(where: str, s: MarketSegment) -> None:
    if not (math.isfinite(s.mu) and math.isfinite(s.sigma) and s.sigma > 0):
        raise ModelFormatError(f"market segment {where}: mu and sigma must be finite, sigma > 0")
    if not (math.isfinite(s.weight) and s.weight >= 0):
        raise ModelFormatError(f"market segment {where}: weight must be finite and >= 0")


def _check_head(name: str, head: SparseHead, bits: int) -> None:
    idx, w = head.indices, head.weights
    if idx.shape != w.shape or idx.ndim != 1:
        raise ModelFormatError(f"{name} head: indices and weights differ in shape")
    if not math.isfinite(head.bias):
        raise ModelFormatError(f"{name} head: bias is not finite")
    if idx.size:
        if int(idx.max()) >= 1 << bits:
            raise ModelFormatError(f"{name} head: an index is not below 2**{bits}")
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise ModelFormatError(f"{name} head: indices are not strictly increasing")
        if not bool(np.isfinite(w).all()) or not bool(np.all(w != 0)):
            raise ModelFormatError(f"{name} head: weights must be finite and non-zero")


def _name_bytes(what: str, name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        raise ModelFormatError(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return raw


def encode_sparse(model: SparseModel) -> bytes:
    """The version-2 bytes of ``model``; raises ModelFormatError on a model it cannot hold."""
    if not 1 <= model.bits <= MAX_BITS:
        raise ModelFormatError(f"bits must be between 1 and {MAX_BITS}")
    if not (0 <= model.version < 1 << 64 and 0 <= model.seed < 1 << 32):
        raise ModelFormatError("model version or seed out of range")
    if not 0 <= model.feature_set_version < 1 << 32:
        raise ModelFormatError("feature-set version out of range")
    for name, head in (("click", model.click), ("install", model.install)):
        _check_head(name, head, model.bits)
    fs_name = _name_bytes("feature-set name", model.feature_set)
    parts: list[bytes] = [
        _V2_HEADER.pack(
            MAGIC,
            SPARSE_FORMAT_VERSION,
            model.bits,
            2,
            model.seed,
            model.version,
            model.feature_set_version,
            len(fs_name),
        ),
        fs_name,
    ]
    for head in (model.click, model.install):
        parts.append(_HEAD.pack(head.bias, len(head)))
        parts.append(head.indices.astype("<u4").tobytes())
        parts.append(head.weights.astype("<f4").tobytes())
    market = model.market
    _check_segment("overall", market.overall)
    o = market.overall
    parts.append(_SEGMENT.pack(o.mu, o.sigma, o.weight))
    parts.append(_U32.pack(len(market.segments)))
    for seg_name, seg in sorted(market.segments.items()):
        _check_segment(repr(seg_name), seg)
        raw = _name_bytes("segment name", seg_name)
        parts.append(_U16.pack(len(raw)))
        parts.append(raw)
        parts.append(_SEGMENT.pack(seg.mu, seg.sigma, seg.weight))
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


class _Reader:
    def __init__(self, data: bytes, end: int) -> None:
        self.data = data
        self.pos = 0
        self.end = end

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.end:
            raise ModelFormatError(f"model truncated in {what}")
        at = self.pos
        self.pos += n
        return at

    def unpack(self, s: struct.Struct, what: str) -> tuple[object, ...]:
        return s.unpack_from(self.data, self.take(s.size, what))

    def text(self, n: int, what: str) -> str:
        at = self.take(n, what)
        try:
            return self.data[at : at + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError(f"{what} is not UTF-8") from None


def decode_sparse(data: bytes) -> SparseModel:
    """Raises ModelFormatError on anything but a complete, intact version-2 model."""
    data = bytes(data)
    if format_version(data) != SPARSE_FORMAT_VERSION:
        raise ModelFormatError(f"model format {format_version(data)} is not the sparse one (2)")
    if len(data) < _V2_HEADER.size + _U32.size:
        raise ModelFormatError("model bytes too short")
    end = len(data) - _U32.size
    (crc,) = _U32.unpack_from(data, end)
    if zlib.crc32(memoryview(data)[:end]) != crc:
        raise ModelFormatError("model checksum mismatch")
    r = _Reader(data, end)
    _, _, bits, heads, seed, version, fs_version, name_len = r.unpack(_V2_HEADER, "header")
    assert isinstance(bits, int) and isinstance(heads, int) and isinstance(name_len, int)
    if not 1 <= bits <= MAX_BITS or heads != 2:
        raise ModelFormatError(f"bad model shape: bits={bits} heads={heads}")
    feature_set = r.text(name_len, "feature-set name")
    decoded: list[SparseHead] = []
    for head_name in ("click", "install"):
        bias, count = r.unpack(_HEAD, f"{head_name} head")
        assert isinstance(bias, float) and isinstance(count, int)
        at = r.take(8 * count, f"{head_name} weights")
        idx = np.frombuffer(data, dtype="<u4", count=count, offset=at).astype(np.uint32)
        w = np.frombuffer(data, dtype="<f4", count=count, offset=at + 4 * count)
        head = SparseHead(bias, idx, w.astype(np.float32))
        _check_head(head_name, head, bits)
        decoded.append(head)
    mu, sigma, weight = r.unpack(_SEGMENT, "market model")
    overall = MarketSegment(float(mu), float(sigma), float(weight))  # type: ignore[arg-type]
    _check_segment("overall", overall)
    (count,) = r.unpack(_U32, "market segments")
    assert isinstance(count, int)
    segments: dict[str, MarketSegment] = {}
    for _ in range(count):
        (n,) = r.unpack(_U16, "segment name")
        assert isinstance(n, int)
        seg_name = r.text(n, "segment name")
        mu, sigma, weight = r.unpack(_SEGMENT, "market segment")
        seg = MarketSegment(float(mu), float(sigma), float(weight))  # type: ignore[arg-type]
        _check_segment(repr(seg_name), seg)
        if seg_name in segments:
            raise ModelFormatError(f"market segment {seg_name!r} appears twice")
        segments[seg_name] = seg
    if r.pos != end:
        raise ModelFormatError(f"{end - r.pos} unexpected bytes after the market model")
    return SparseModel(
        version=int(version),  # type: ignore[call-overload]
        bits=bits,
        seed=int(seed),  # type: ignore[call-overload]
        feature_set=feature_set,
        feature_set_version=int(fs_version),  # type: ignore[call-overload]
        click=decoded[0],
        install=decoded[1],
        market=MarketTable(overall, segments),
    )


def _decode_sparse_file(data: bytes) -> ModelFile:
    sm = decode_sparse(data)
    weights = np.stack([sm.click.dense(sm.bits), sm.install.dense(sm.bits)])
    return ModelFile(
        bits=sm.bits,
        seed=sm.seed,
        version=sm.version,
        click_bias=sm.click.bias,
        install_bias=sm.install.bias,
        weights=weights,
        feature_set=sm.feature_set,
        feature_set_version=sm.feature_set_version,
        market=sm.market,
    )


_DECODERS: Final[dict[int, Callable[[bytes], ModelFile]]] = {
    DENSE: _decode_dense,
    SPARSE_FORMAT_VERSION: _decode_sparse_file,
}
