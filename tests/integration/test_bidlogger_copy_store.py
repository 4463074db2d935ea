"""The raw sample's COPY stream against a real Postgres, through the writer process: a batch
within one day goes into that day's partition, one spanning two days through the parent; a batch
spooled by the previous version (rows, no stream) is encoded at apply; each batch is applied
once; with several in flight each commits after the one before it, and not at all when that one
fails; a writer process killed mid-batch fails what it had, and the next one applies it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from bidlogger.aggregate import AggRow, Batch
from bidlogger.copyfmt import encode_raw
from bidlogger.errors import BatchRejected, SpoolError, StoreError
from bidlogger.raw import RawRow
from bidlogger.spool import Spool
from bidlogger.store import Store, day_of
from bidlogger.writer import Request, Writer

DAY = 1_796_083_200.0  # 2026-12-01 00:00:00 UTC


def raw_rows(stamps: list[float]) -> list[RawRow]:
    return [
        RawRow(
            ts, "click", f"r{i}:1:b", i % 64, 7, 70, json.dumps({"type": "click", "n": i}).encode()
        )
        for i, ts in enumerate(stamps)
    ]


def batch(seq: int, rows: list[RawRow], *, stream: bool, events: int = 0) -> Batch:
    copy, first, last = encode_raw(rows, "lg", seq) if stream else (b"", 0, 0)
    aggregates = [AggRow(int(DAY), 7, 70, "click", events, 0, 0, 0)] if events else []
    return Batch(
        logger_id="lg", seq=seq, shard="all", partitions_covered=64, partitions_total=64,
        events=min(events, 1000), rows=aggregates, coverage=[], positions=[], losses=[],
        raw=[] if stream else rows, raw_copy=copy, raw_events=len(rows), raw_first=first,
        raw_last=last,
    )  # fmt: skip


def spooled(spool: Spool, b: Batch) -> tuple[int, Path]:
    spool.remove(b.seq)  # a batch sent again is spooled again, as the logger does
    assert spool.put(b)
    return b.seq, spool.path(b.seq)


async def reply(request: Request) -> object:
    return await asyncio.wait_for(asyncio.wrap_future(request), 30)


async def test_streams_land_in_their_day_and_old_spooled_batches_still_apply(
    pg_dsn: str, tmp_path: Path
) -> None:
    one_day = raw_rows([DAY + 5.25, DAY + 86_399.9999994, DAY + 3600.5])
    two_days = raw_rows([DAY + 86_399.5, DAY + 86_400.0])
    legacy = raw_rows([DAY + 10.0, DAY + 20.0])
    spool = Spool(tmp_path / "spool", 1 << 20)
    writer = Writer(pg_dsn)
    try:
        assert await reply(writer.submit(*spooled(spool, batch(1, one_day, stream=True))))
        assert await reply(writer.submit(*spooled(spool, batch(2, two_days, stream=True))))
        again = writer.submit(*spooled(spool, batch(2, two_days, stream=True)))
        assert await reply(again) is False  # applied once
        assert await reply(writer.submit(*spooled(spool, batch(3, legacy, stream=False))))
        plain = Store(pg_dsn)
        try:
            assert not await plain.apply(batch(3, legacy, stream=False))
        finally:
            await plain.close()
        assert writer.started == 1
    finally:
        await writer.close()
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


async def test_batches_in_flight_commit_in_order_and_a_failed_one_rolls_back_the_next(
    pg_dsn: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    writer = Writer(pg_dsn)
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
        for table in ("bidlogger_raw", "bidlogger_minute"):
            await conn.execute("SELECT bidlogger_day_partition($1, $2)", table, day_of(DAY))
        # the first waits for a lock on the aggregates: the second, its raw rows copied on the
        # other connection, is not committed before it
        blocker = await asyncpg.connect(pg_dsn)
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE bidlogger_minute IN ACCESS EXCLUSIVE MODE")
        first = writer.submit(*spooled(spool, batch(20, raw_rows([DAY]), stream=True, events=3)))
        second = writer.submit(
            *spooled(spool, batch(21, raw_rows([DAY + 1.0, DAY + 2.0]), stream=True)), first
        )
        await asyncio.sleep(0.5)
        assert not first.done() and not second.done()
        assert await landed(20) == (0, 0) and await landed(21) == (0, 0)
        await locked.rollback()
        await blocker.close()
        assert await reply(first) and await reply(second)
        assert await landed(20) == (1, 1) and await landed(21) == (1, 2)

        # the first is refused (past bigint): the second, its raw rows copied already, is rolled
        # back whole, and applies when sent again
        refused = writer.submit(*spooled(spool, batch(22, [], stream=True, events=2**63)))
        rows = raw_rows([DAY + 3.0, DAY + 4.0, DAY + 5.0])
        after = writer.submit(*spooled(spool, batch(23, rows, stream=True)), refused)
        with pytest.raises(BatchRejected) as rejected:
            await reply(refused)
        assert rejected.value.events == 1000
        with pytest.raises(StoreError, match="the one before it failed"):
            await reply(after)
        assert await landed(23) == (0, 0)
        # chained to a failed one known here: failed at once, nothing sent
        late = writer.submit(*spooled(spool, batch(23, rows, stream=True)), refused)
        with pytest.raises(StoreError, match="the one before it failed"):
            await reply(late)
        assert await reply(writer.submit(*spooled(spool, batch(23, rows, stream=True))))
        assert await landed(23) == (1, 3)

        # more in flight than connections: each waits for its turn, all land once, in order
        chain: list[Request] = []
        for seq in range(24, 30):
            b = batch(seq, raw_rows([DAY + seq + i / 10 for i in range(seq - 22)]), stream=True)
            chain.append(writer.submit(*spooled(spool, b), chain[-1] if chain else None))
        assert [await reply(r) for r in chain] == [True] * 6
        assert [await landed(s) for s in range(24, 30)] == [(1, s - 22) for s in range(24, 30)]
        assert await reply(writer.submit(*spooled(spool, batch(25, [], stream=True)))) is False
    finally:
        await conn.close()
        await writer.close()


async def test_a_writer_killed_mid_batch_fails_it_and_the_next_one_applies_it(
    pg_dsn: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    writer = Writer(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await reply(writer.submit(*spooled(spool, batch(1, raw_rows([DAY]), stream=True))))
        blocker = await asyncpg.connect(pg_dsn)
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE bidlogger_minute IN ACCESS EXCLUSIVE MODE")
        pending = writer.submit(
            *spooled(spool, batch(2, raw_rows([DAY + 1]), stream=True, events=5))
        )
        await asyncio.sleep(0.5)
        process = pending.process
        assert process is not None and not pending.done()
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(StoreError, match="exited"):
            await reply(pending)
        await locked.rollback()
        await blocker.close()
        again = writer.submit(*spooled(spool, batch(2, raw_rows([DAY + 1]), stream=True, events=5)))
        assert await reply(again)
        assert writer.started == 2
        assert await conn.fetchval("SELECT count(*) FROM bidlogger_raw WHERE flush_seq = 2") == 1
        assert await conn.fetchval("SELECT sum(events) FROM bidlogger_minute") == 5

        # a spooled file that does not decode is said to be unreadable
        spool.path(3).write_bytes(b"not a batch")
        with pytest.raises(SpoolError, match="unreadable"):
            await reply(writer.submit(3, spool.path(3)))
    finally:
        await conn.close()
        await writer.close()
