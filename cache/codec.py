"""Bytes in memcached and on the coherence bus: versioned records and bus messages (msgpack).

A :class:`Record` is a value (or a tombstone: an invalidation) with its version and the wall time
its L3 load started. L2 stores one record per key; the bus carries records inside
:class:`Message`. Values are encoded once per namespace type with msgspec and zlib-compressed
past a size, so a record can be passed from L2 to the bus without decoding the value.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from cache.errors import CodecError

T = TypeVar("T")

TOPIC_PREFIX: Final = "co.cache."
NAMESPACE_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")
_KEY_SAFE: Final = re.compile(r"^[\x21-\x7e]{1,160}$")  # printable ASCII, no space


class Record(msgspec.Struct, array_like=True, frozen=True):
    """A value or, when ``payload`` is None, a tombstone."""

    version: int
    loaded_at: float  # wall-clock seconds when the L3 load started (tombstones: when written)
    payload: bytes | None = None
    compressed: bool = False

    @property
    def is_value(self) -> bool:
        return self.payload is not None


Op = Literal["inv", "fill", "flush", "ping"]


class Message(msgspec.Struct, array_like=True, frozen=True):
    """One coherence message.

    - ``inv``: ``key`` changed at ``version``; drop older copies.
    - ``flush``: every key of ``namespace`` older than ``version`` is suspect (``key`` empty).
    - ``fill``: ``key`` was loaded at ``version``; ``record`` holds the value unless it was too
      large for the bus, in which case it is in L2.
    - ``ping``: a process checking that it hears itself (see cache.coherence); ignored.
    """

    op: Op
    namespace: str
    key: str
    version: int
    origin: str
    record: Record | None = None


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_message_decoder = msgspec.msgpack.Decoder(Message)
_int_decoder = msgspec.msgpack.Decoder(int)


def encode_record(record: Record) -> bytes:
    return _record_encoder.encode(record)


def _decode(decoder: msgspec.msgpack.Decoder[T], data: bytes, what: str) -> T:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"bad {what}: {exc}") from exc


def decode_record(data: bytes) -> Record:
    return _decode(_record_decoder, data, "cache record")


def encode_message(message: Message) -> bytes:
    return _record_encoder.encode(message)


def decode_message(data: bytes) -> Message:
    return _decode(_message_decoder, data, "coherence message")


def encode_int(value: int) -> bytes:
    return _record_encoder.encode(value)


def decode_int(data: bytes) -> int:
    return _decode(_int_decoder, data, "cache integer")


class ValueCodec(Generic[T]):
    """Encodes one namespace's values (msgspec msgpack, typed on decode; zlib past a size)."""

    def __init__(self, type_: Any = Any, compress_min_bytes: int = 16_384) -> None:
        self.type = type_
        self.compress_min_bytes = compress_min_bytes
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type_)

    def encode(self, value: T) -> tuple[bytes, bool]:
        data = self._encoder.encode(value)
        if len(data) >= self.compress_min_bytes:
            packed = zlib.compress(data, 1)
            if len(packed) < len(data):
                return packed, True
        return data, False

    def decode(self, payload: bytes, compressed: bool) -> T:
        try:
            data = zlib.decompress(payload) if compressed else payload
            return self._decoder.decode(data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, msgspec.ValidationError, zlib.error) as exc:
            raise CodecError(f"bad cache value: {exc}") from exc

    def record(self, value: T, version: int, loaded_at: float) -> Record:
        payload, compressed = self.encode(value)
        return Record(version=version, loaded_at=loaded_at, payload=payload, compressed=compressed)

    def value_of(self, record: Record) -> T:
        if record.payload is None:
            raise CodecError("a tombstone has no value")
        return self.decode(record.payload, record.compressed)


def topic(namespace: str) -> str:
    return f"{TOPIC_PREFIX}{namespace}"


def namespace_of_topic(name: str) -> str | None:
    if name.startswith(TOPIC_PREFIX):
        return name[len(TOPIC_PREFIX) :]
    return None


def check_namespace(name: str) -> str:
    if not NAMESPACE_RE.match(name):
        raise ValueError(
            f"cache namespace {name!r} must be 1-48 characters: a lower-case letter, then "
            "letters, digits, '_' or '-'"
        )
    return name


def l2_key(prefix: str, namespace: str, key: str, suffix: str = "") -> str:
    """The memcached key: readable when ``key`` is short printable ASCII, else a digest."""
    if not _KEY_SAFE.match(key) or key.startswith(("~", "#")):
        key = "#" + hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    return f"{prefix}:{namespace}:{key}{suffix}"


def l2_floor_key(prefix: str, namespace: str) -> str:
    """The memcached key holding the namespace's floor (the version of its last flush)."""
    return f"{prefix}:{namespace}:~floor"
