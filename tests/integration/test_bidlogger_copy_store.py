"""The raw sample's COPY stream against a real Postgres: a batch within one day goes into that
day's partition, one spanning two days through the parent; a batch spooled by the previous
version (rows, no stream) is encoded at apply; the writer thread applies each batch once; with
two in flight the second commits after the first, and not at all when the first fails."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json

import asyncpg
import pytest

from bidlogger.aggregate import Batch
from bidlogger.copyfmt import encode_raw
from bidlogger.errors import StoreError
from bidlogger.raw import RawRow
from bidlogger.store import Store
from bidlogger.writer import ThreadedStore

DAY = 1_796_083_200.0  # 2026-12-01 00:00:00 UTC


def raw_rows(stamps: list[float]) -> list[RawRow]:
    return [
        RawRow(
            ts, "click", f"r{i}:1:b", i % 64, 7, 70, json.dumps({"type": "click", "n": i}).encode()
        )
        for i, ts in enumerate(stamps)
    ]


def batch(seq: int, rows: list[RawRow], *, stream: bool) -> Batch:
    copy, first, last = encode_raw(rows, "lg", seq) if stream else (b"", 0, 0)
    return Batch(
        logger_id="lg", seq=seq, shard="all", partitions_covered=64, partitions_total=64,
        events=0, rows=[], coverage=[], positions=[], losses=[], raw=[] if stream else rows,
        raw_copy=copy, raw_events=len(rows), raw_first=first, raw_last=last,
    )  # fmt: skip


async def test_streams_land_in_their_day_and_old_spooled_batches_still_apply(pg_dsn: str) -> None:
    one_day = raw_rows([DAY + 5.25, DAY + 86_399.9999994, DAY + 3600.5])
    two_days = raw_rows([DAY + 86_399.5, DAY + 86_400.0])
    legacy = raw_rows([DAY + 10.0, DAY + 20.0])
    store = ThreadedStore(pg_dsn)
    try:
        assert await store.apply(batch(1, one_day, stream=True))
        assert await store.apply(batch(2, two_days, stream=True))
        assert not await store.apply(batch(2, two_days, stream=True))  # applied once
        plain = Store(pg_dsn)
        try:
            assert await plain.apply(batch(3, legacy, stream=False))
        finally:
            await plain.close()
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT tableoid::regclass::text AS part, flush_seq, extract(epoch FROM ts)::float8 "
            "AS ts, txid, bus_partition, campaign_id, creative_id, logger_id, event::text AS e "
            "FROM bidlogger_raw ORDER BY flush_seq, ts"
        )
        counted = await conn.fetch(
            "SELECT flush_seq, raw_events FROM bidlogger_batches ORDER BY flush_seq"
        )
    finally:
        await conn.close()
    assert [(r["flush_seq"], r["raw_events"]) for r in counted] == [(1, 3), (2, 2), (3, 2)]
    assert len(rows) == 7
    for r in rows:
        day = "20261201" if r["ts"] < DAY + 86_400 else "20261202"
        assert r["part"] == f"bidlogger_raw_{day}"
        assert (r["campaign_id"], r["creative_id"], r["logger_id"]) == (7, 70, "lg")
        assert json.loads(r["e"])["type"] == "click"
    sent = sorted(round(x.ts, 6) for x in one_day + two_days + legacy)
    assert sorted(round(r["ts"], 6) for r in rows) == sent


async def test_two_batches_in_flight_commit_in_order_and_a_failed_first_rolls_back_the_second(
    pg_dsn: str,
) -> None:
    store = ThreadedStore(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)

    async def landed(seq: int) -> tuple[int, int]:
        batches = await conn.fetchval(
            "SELECT count(*) FROM bidlogger_batches WHERE logger_id = 'lg' AND flush_seq = $1", seq
        )
        raw = await conn.fetchval(
            "SELECT count(*) FROM bidlogger_raw WHERE logger_id = 'lg' AND flush_seq = $1", seq
        )
        return batches, raw

    try:
        # the second waits for the first: not committed while the first is pending
        first: concurrent.futures.Future[bool] = concurrent.futures.Future()
        second = store.submit(batch(21, raw_rows([DAY + 1.0, DAY + 2.0]), stream=True), first)
        await asyncio.sleep(0.2)
        assert not second.done()
        assert await landed(21) == (0, 0)
        first.set_result(True)
        assert await asyncio.wrap_future(second)
        assert await landed(21) == (1, 2)

        # the first fails: the second, its raw rows copied already, is rolled back whole
        failed: concurrent.futures.Future[bool] = concurrent.futures.Future()
        failed.set_exception(StoreError("batch 22 not applied"))
        rows = raw_rows([DAY + 3.0, DAY + 4.0, DAY + 5.0])
        with pytest.raises(StoreError, match="the one before it failed"):
            await asyncio.wrap_future(store.submit(batch(23, rows, stream=True), failed))
        assert await landed(23) == (0, 0)
        assert await asyncio.wrap_future(store.submit(batch(23, rows, stream=True)))  # again
        assert await landed(23) == (1, 3)

        # two in flight on the two connections, each applied once
        a = store.submit(batch(24, raw_rows([DAY + 6.0]), stream=True))
        b = store.submit(batch(25, raw_rows([DAY + 7.0, DAY + 8.0]), stream=True), a)
        assert await asyncio.wrap_future(a) and await asyncio.wrap_future(b)
        assert [await landed(s) for s in (24, 25)] == [(1, 1), (1, 2)]
        assert not await asyncio.wrap_future(store.submit(batch(25, [], stream=True)))
    finally:
        await conn.close()
        await store.close()
