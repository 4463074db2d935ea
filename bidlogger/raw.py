"""The raw sample in memory: one chunk per delivered batch, its events' JSON encoded in one call.

A :class:`RawChunk` holds the events of one delivered batch that the raw sample keeps (one event
type, one bus partition): the columns Postgres indexes, as lists, and the events themselves as
JSON lines (``msgspec``'s ``encode_lines``: one JSON text per event, each ended by a newline,
which JSON text never holds unescaped). Those same bytes are the ``jsonb`` of the COPY stream
(``bidlogger.copyfmt``, split at the newlines as it is encoded) and the input of the Parquet
files (``bidlogger.parquet``: Arrow's JSON reader takes the lines as they are): the events are
encoded to JSON once, and no per-event object is made past the decoding.

:class:`RawRow` is one event of it, as a batch spooled by an earlier version holds them, and
as the references (``copyfmt.encode_raw_py``, the tests) read them: :func:`rows_of`.
"""

from __future__ import annotations

from typing import Any

import msgspec

_json = msgspec.json.Encoder()


class RawRow(msgspec.Struct, array_like=True, frozen=True):
    """One raw-sample event: the columns Postgres indexes, and the event whole as JSON."""

    ts: float
    event_type: str
    txid: str
    partition: int
    campaign_id: int
    creative_id: int
    json: bytes


class RawChunk(msgspec.Struct, array_like=True, frozen=True):
    """Raw-sample events of one type from one partition; ``lines``: their JSON, one a line."""

    event_type: str
    partition: int
    stamps: list[float]
    txids: list[str]
    campaigns: list[int]
    creatives: list[int]
    lines: bytes

    def __len__(self) -> int:
        return len(self.stamps)


def chunk_of(
    event_type: str, partition: int, events: list[Any], stamps: list[float], campaigns: bool
) -> RawChunk:
    """The chunk of ``events`` (decoded structs; ``stamps``: their ``ts``). ``campaigns``:
    whether the type has ``campaign_id``/``creative_id`` (0 for both when not)."""
    if campaigns:
        campaign_ids = [e.campaign_id for e in events]
        creative_ids = [e.creative_id for e in events]
    else:
        campaign_ids = creative_ids = [0] * len(events)
    return RawChunk(
        event_type,
        partition,
        stamps,
        [e.txid for e in events],
        campaign_ids,
        creative_ids,
        _json.encode_lines(events),
    )


def split_lines(lines: bytes) -> list[bytes]:
    """The JSON texts of a chunk's ``lines``, one per event."""
    parts = lines.split(b"\n")
    parts.pop()  # after the last newline: nothing
    return parts


def rows_of(chunks: list[RawChunk]) -> list[RawRow]:
    """The chunks' events as rows, in order."""
    return [
        RawRow(ts, c.event_type, txid, c.partition, campaign, creative, json)
        for c in chunks
        for ts, txid, campaign, creative, json in zip(
            c.stamps, c.txids, c.campaigns, c.creatives, split_lines(c.lines), strict=True
        )
    ]
