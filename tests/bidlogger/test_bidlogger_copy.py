"""The raw sample's binary COPY stream: the compiled encoder equals its reference byte for byte,
rounds timestamps as datetime does, refuses what a column cannot hold, and travels through the
spool as bytes."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bidlogger_world import world

from bidlogger.aggregate import Aggregator, BidJoin, RawRow
from bidlogger.copyfmt import HEADER, PG_EPOCH_US, TRAILER, encode_raw, encode_raw_py, micros
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
    assert batch.raw_count == len(batch.raw) == len(events)
    assert (batch.raw_copy, batch.raw_first, batch.raw_last) == encode_raw(batch.raw, "lg", 4)
    spool = Spool(tmp_path, 10**8)
    assert spool.put(batch)
    again = spool.read(4)
    assert again.raw == [] and again.raw_copy == batch.raw_copy
    assert again.raw_count == len(events)
    assert again.rows == batch.rows and again.positions == batch.positions
