"""Raw-sample rows as a Postgres binary COPY stream, encoded once per flush.

The stream is what ``COPY bidlogger_raw (<RAW_COLUMNS>) FROM STDIN (FORMAT binary)`` reads: the
19-byte header, then per row a 16-bit field count and each field as a 32-bit length and its
bytes in Postgres's binary send format, then the trailer (-1 as 16 bits):

- ``ts`` timestamptz: int64 microseconds since 2000-01-01 UTC (rounded as
  ``datetime.fromtimestamp`` rounds the float epoch seconds);
- ``event_type``, ``txid``, ``logger_id`` text: UTF-8;
- ``bus_partition`` int4, ``campaign_id``, ``creative_id``, ``flush_seq`` int8;
- ``event`` jsonb: the version byte 1, then the event's JSON text.

The flush encodes the stream once; the same bytes are spooled with the batch and sent to
Postgres as they are (no per-row work in the writer, nor again on a replay). ``encode_chunks``
(the flush's chunks, ``bidlogger.raw``) and ``encode_raw`` (rows) are the compiled encoders
(``bidlogger._copy``); :func:`encode_raw_py` is their reference, kept byte-for-byte equal by
tests/bidlogger/test_bidlogger_copy.py.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Protocol

from bidlogger._copy import encode_chunks, encode_raw

__all__ = [
    "HEADER",
    "RAW_COLUMNS",
    "TRAILER",
    "RowLike",
    "encode_chunks",
    "encode_raw",
    "encode_raw_py",
]

RAW_COLUMNS = (
    "ts",
    "event_type",
    "txid",
    "bus_partition",
    "campaign_id",
    "creative_id",
    "logger_id",
    "flush_seq",
    "event",
)
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
PG_EPOCH_US = 946_684_800 * 1_000_000
_INT4 = struct.Struct(">ii")
_INT8 = struct.Struct(">iq")


class RowLike(Protocol):
    @property
    def ts(self) -> float: ...
    @property
    def event_type(self) -> str: ...
    @property
    def txid(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def campaign_id(self) -> int: ...
    @property
    def creative_id(self) -> int: ...
    @property
    def json(self) -> bytes: ...


def micros(ts: float) -> int:
    """Epoch seconds to epoch microseconds, as ``datetime.fromtimestamp`` rounds them."""
    if not -1e11 < ts < 1e11:  # also false for nan
        raise OverflowError("raw-sample timestamp out of range")
    frac, whole = math.modf(ts)
    return int(whole) * 1_000_000 + round(frac * 1e6)


def _text(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def encode_raw_py(
    rows: Sequence[RowLike], logger_id: str, flush_seq: int
) -> tuple[bytes, int, int]:
    """(stream, first, last): see the module doc. Raises OverflowError (struct.error is one)
    on a value its column cannot hold."""
    out = [HEADER]
    logger = _text(logger_id.encode())
    seq = _INT8.pack(8, flush_seq)
    stamps = []
    for r in rows:
        us = micros(r.ts)
        stamps.append(us)
        try:
            numbers = (
                _INT4.pack(4, r.partition)
                + _INT8.pack(8, r.campaign_id)
                + _INT8.pack(8, r.creative_id)
            )
        except struct.error as exc:
            raise OverflowError(str(exc)) from exc
        out.append(
            b"".join(
                (
                    struct.pack(">hiq", len(RAW_COLUMNS), 8, us - PG_EPOCH_US),
                    _text(r.event_type.encode()),
                    _text(r.txid.encode()),
                    numbers,
                    logger,
                    seq,
                    _text(b"\x01" + r.json),
                )
            )
        )
    out.append(TRAILER)
    return b"".join(out), min(stamps, default=0), max(stamps, default=0)
