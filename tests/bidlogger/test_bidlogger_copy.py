"""The raw sample's binary COPY stream: the compiled encoder equals its reference byte for byte,
rounds timestamps as datetime does, refuses what a column cannot hold, and travels through the
spool as bytes."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bidlogger_world import world

from bidlogger.aggregate import Aggregator, BidJoin
from bidlogger.copyfmt import (
    HEADER,
    PG_EPOCH_US,
    TRAILER,
    encode_chunks,
    encode_raw,
    encode_raw_py,
    micros,
)
from bidlogger.raw import RawChunk, RawRow, rows_of
from bidlogger.spool import Spool
from fleet.events import EVENT_TYPES, encode, topic_for

TOTAL = 64


def rows() -> list[RawRow]:
    return [
        RawRow(1_796_000_000.0, "bid", "r1:1:b", 0, 1, 10, b'{"a":1}'),
        RawRow(1_796_000_000.0000005, "click", "r\u00e9:2:b", 63, 2**63 - 1, 0, b"{}"),
        RawRow(0.25, "auction", "", 7, -(2**63), 5, b'{"s":"\xc3\xa9"}'),
        RawRow(4_000_000_000.999999, "inapp", "x" * 300, 2**31 - 1, 0, 0, b"[" * 2000),
    ]


def test_compiled_encoder_equals_the_reference() -> None:
    logger = "logger-\u00e9"
    for some in (rows(), rows()[:1], []):
        assert encode_raw(some, logger, 2**40) == encode_raw_py(some, logger, 2**40)


def chunks() -> list[RawChunk]:
    return [
        RawChunk("bid", 3, [1_796_000_000.0, 0.25], ["r1:1:b", "r\u00e9"], [1, -(2**63)],
                 [10, 2**63 - 1], b'{"a":1}\n{"s":"\xc3\xa9"}\n'),
        RawChunk("auction", 63, [], [], [], [], b""),
        RawChunk("inapp", 2**31 - 1, [4_000_000_000.999999], ["x" * 300], [0], [0],
                 b"[" * 2000 + b"\n"),
    ]  # fmt: skip


def test_chunks_encode_as_their_rows() -> None:
    logger = "logger-\u00e9"
    rows = rows_of(chunks())
    assert [r.json for r in rows] == [b'{"a":1}', b'{"s":"\xc3\xa9"}', b"[" * 2000]
    for some in (chunks(), chunks()[1:2], []):
        expected = encode_raw_py(rows_of(some), logger, 2**40)
        assert encode_chunks(some, logger, 2**40) == expected
        assert encode_raw(rows_of(some), logger, 2**40) == expected


@pytest.mark.parametrize("lines", [b'{"a":1}\n', b'{"a":1}\n{}\n{}\n', b'{"a":1}\n{}'])
def test_a_chunk_whose_lines_do_not_match_its_columns_is_refused(lines: bytes) -> None:
    bad = RawChunk("bid", 0, [1.0, 2.0], ["a", "b"], [1, 2], [3, 4], lines)
    with pytest.raises(ValueError, match="lines"):
        encode_chunks([bad], "l", 1)


def test_stream_layout_and_timestamps() -> None:
    data, first, last = encode_raw(rows(), "lg", 3)
    assert data.startswith(HEADER) and data.endswith(TRAILER)
    assert (first, last) == (250_000, 4_000_000_000_999_999)
    # the first row: 9 fields, ts as int64 microseconds since 2000-01-01
    count, size, pg_us = struct.unpack_from(">hiq", data, len(HEADER))
    assert (count, size) == (9, 8)
    when = datetime.fromtimestamp(1_796_000_000.0, UTC)
    assert pg_us + PG_EPOCH_US == round(when.timestamp() * 1_000_000)
    assert encode_raw([], "lg", 1) == (HEADER + TRAILER, 0, 0)


@pytest.mark.parametrize("ts", [0.0, 0.5, 1.5e-6, 2.5e-6, 1_796_000_123.4567895, 3.9e9 + 0.7])
def test_microseconds_round_as_datetime_does(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    assert micros(ts) == expected // _MICRO
    _, first, _ = encode_raw([RawRow(ts, "bid", "t", 0, 0, 0, b"{}")], "l", 1)
    assert first == micros(ts)


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        RawRow(1.0, "bid", "t", 2**31, 0, 0, b"{}"),
        RawRow(1.0, "bid", "t", 0, 2**63, 0, b"{}"),
        RawRow(1.0, "bid", "t", 0, 0, -(2**63) - 1, b"{}"),
        RawRow(float("nan"), "bid", "t", 0, 0, 0, b"{}"),
        RawRow(1e12, "bid", "t", 0, 0, 0, b"{}"),
    ],
)
def test_values_a_column_cannot_hold_are_refused(bad: RawRow) -> None:
    for encoder in (encode_raw, encode_raw_py):
        with pytest.raises(OverflowError):
            encoder([*rows(), bad], "l", 1)
    chunk = RawChunk(bad.event_type, bad.partition, [bad.ts], [bad.txid], [bad.campaign_id],
                     [bad.creative_id], bad.json + b"\n")  # fmt: skip
    with pytest.raises(OverflowError):
        encode_chunks([*chunks(), chunk], "l", 1)


def test_a_batch_whose_stream_cannot_be_encoded_is_spooled_as_rows(tmp_path: Path) -> None:
    agg = Aggregator(
        logger_id="lg", shard="all", partitions_covered=TOTAL, partitions_total=TOTAL,
        join=BidJoin(3600, 100), raw_partitions=frozenset({2**31}),
        raw_types=frozenset(EVENT_TYPES), check_partition=False,
    )  # fmt: skip
    events = [e for tx in world(3) for e in tx]
    for e in events:
        agg.add(topic_for(e, TOTAL), 2**31, topic_for(e, TOTAL).rsplit(".", 1)[1], [encode(e)])
    batch = agg.flush(1)
    assert batch.raw_copy == b"" and batch.raw == rows_of(batch.chunks)
    assert len(batch.raw) == len(events)
    spool = Spool(tmp_path, 10**8)
    assert spool.put(batch)
    assert spool.read(1).raw == batch.raw and spool.read(1).chunks == []


def test_a_flushed_batch_carries_its_stream_and_the_spool_keeps_only_the_stream(
    tmp_path: Path,
) -> None:
    agg = Aggregator(
        logger_id="lg",
        shard="all",
        partitions_covered=TOTAL,
        partitions_total=TOTAL,
        join=BidJoin(3600, 100_000),
        raw_partitions=frozenset(range(TOTAL)),
        raw_types=frozenset(EVENT_TYPES),
    )
    events = [e for tx in world(30) for e in tx]
    for e in events:
        topic = topic_for(e, TOTAL)
        agg.add(topic, int(topic.split(".")[1]), topic.rsplit(".", 1)[1], [encode(e)])
    batch = agg.flush(4)
    rows = rows_of(batch.chunks)
    assert batch.raw == [] and batch.raw_count == len(rows) == len(events)
    assert (batch.raw_copy, batch.raw_first, batch.raw_last) == encode_raw_py(rows, "lg", 4)
    spool = Spool(tmp_path, 10**8)
    assert spool.put(batch)
    again = spool.read(4)
    assert again.raw == again.chunks == [] and again.raw_copy == batch.raw_copy
    assert again.raw_count == len(events)
    assert again.rows == batch.rows and again.positions == batch.positions
