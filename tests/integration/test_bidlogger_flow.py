"""Bid loggers end to end: a real proxy process, real publishers, real Postgres.

Aggregates equal the events sent, exactly; a k/P logger holds whole transactions only (tracker
events included) and marks its figures as estimates; Postgres stopped and restarted loses
nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bidlogger_world import expected, world
from conftest_bidlogger import (
    fetch,
    forget_earlier_garbage,
    logger_settings,
    minute_rows,
    publish,
    running_proxy,
    split,
    temporary_root,
    until_counted,
    until_heard,
)
from test_bus_proxy import Proxy

from bidlogger import BidLogger
from bidlogger.aggregate import AggRow, Batch
from fleet.bus import Publisher
from fleet.db import migrate
from fleet.events import event_type, partition_of
from fleet.pg import LocalPostgres, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _earlier_garbage() -> None:
    forget_earlier_garbage()


START = 1_796_000_000.0 // 60 * 60


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async with running_proxy() as running:
        yield running


@pytest.fixture
def state_root() -> Iterator[Path]:
    with temporary_root() as root:
        yield root


def compare(rows: list, exp: object, *, scale: float = 1.0) -> None:
    got_events = {
        (r["minute"], r["campaign_id"], r["creative_id"], r["event_type"]): r for r in rows
    }
    assert {k: r["events_seen"] for k, r in got_events.items()} == dict(exp.events)  # type: ignore[attr-defined]
    spend = {k: r["spend_micros_seen"] for k, r in got_events.items() if r["spend_micros_seen"]}
    assert spend == {k: v for k, v in exp.spend.items() if v}  # type: ignore[attr-defined]


async def test_two_disjoint_loggers_give_exact_fleet_aggregates(
    proxy: Proxy, state_root: Path, pg_dsn: str
) -> None:
    loggers = [
        BidLogger(logger_settings(proxy, state_root, partitions=spec), pg_dsn)
        for spec in ("0-31", "32-63")
    ]
    for lg in loggers:
        await lg.start()
    bidder = Publisher(proxy.inside, publisher_id="bidder-a", batch_delay=0.005)
    tracker = Publisher(proxy.inside, publisher_id="tracker-a", batch_delay=0.005)
    await bidder.start()
    await tracker.start()
    try:
        await until_heard(bidder, loggers)
        txs = world(1500, start=START)
        bids, later = split(txs)
        await publish(bidder, bids)
        await until_counted(loggers, len(bids))
        await publish(tracker, later)
        await until_counted(loggers, len(bids) + len(later))
        for lg in loggers:
            await lg.flush()
            assert await lg.wait_written(20)
        rows = await minute_rows(pg_dsn, START)
        exp = expected(txs)
        compare(rows, exp)
        assert all(not r["estimated"] for r in rows)
        assert all(r["events"] == r["events_seen"] for r in rows)
        # the click-probability join, exact in 1e-9 units
        joined = await fetch(
            pg_dsn,
            "SELECT extract(epoch FROM minute)::bigint AS m, campaign_id, creative_id, "
            "sum(p_click_e9)::bigint AS p, sum(joined)::bigint AS j FROM bidlogger_minute "
            "WHERE event_type = 'impression' AND minute >= to_timestamp($1) GROUP BY 1, 2, 3",
            START,
        )
        got_p = {(r["m"], r["campaign_id"], r["creative_id"], "impression"): r["p"] for r in joined}
        got_j = {(r["m"], r["campaign_id"], r["creative_id"], "impression"): r["j"] for r in joined}
        assert got_p == dict(exp.p_click_e9)
        assert got_j == dict(exp.joined)
        losses = await fetch(pg_dsn, "SELECT * FROM bidlogger_losses")
        assert losses == []
    finally:
        await bidder.close()
        await tracker.close()
        for lg in loggers:
            await lg.close()


async def test_a_sampled_logger_holds_whole_transactions_and_marks_estimates(
    proxy: Proxy, state_root: Path, pg_dsn: str
) -> None:
    held = set(range(0, 16))
    settings = logger_settings(proxy, state_root, partitions="0-15", raw_partitions="0-15")
    logger = BidLogger(settings, pg_dsn)
    await logger.start()
    bidder = Publisher(proxy.inside, publisher_id="bidder-a", batch_delay=0.005)
    tracker = Publisher(proxy.inside, publisher_id="tracker-a", batch_delay=0.005)
    await bidder.start()
    await tracker.start()
    try:
        await until_heard(bidder, [logger])
        txs = world(1200, start=START, seed=11)
        bids, later = split(txs)
        mine = [e for tx in txs for e in tx if partition_of(tx[0].txid, 64) in held]
        await publish(bidder, bids)
        await publish(tracker, later)
        await until_counted([logger], len(mine))
        await logger.flush()
        assert await logger.wait_written(20)
        exp = expected(txs, held)
        rows = await minute_rows(pg_dsn, START)
        compare(rows, exp)
        assert rows and all(r["estimated"] for r in rows)
        assert all(r["partitions_covered"] == 16 and r["partitions_total"] == 64 for r in rows)
        assert all(r["events"] == round(r["events_seen"] * 64 / 16) for r in rows)
        # the raw sample: every event of every held transaction, and nothing else
        raw = await fetch(
            pg_dsn,
            "SELECT txid, event_type, bus_partition FROM bidlogger_raw "
            "WHERE ts >= to_timestamp($1)",
            START,
        )
        got: dict[str, list[str]] = defaultdict(list)
        for r in raw:
            assert r["bus_partition"] in held
            got[r["txid"]].append(r["event_type"])
        want = {
            tx[0].txid: sorted(event_type(e) for e in tx)
            for tx in txs
            if partition_of(tx[0].txid, 64) in held
        }
        assert {k: sorted(v) for k, v in got.items()} == want
        assert any("impression" in v and "click" in v for v in want.values())
    finally:
        await bidder.close()
        await tracker.close()
        await logger.close()


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="rtbfleet-test-pg-"))
    directory.chmod(0o755)
    server = LocalPostgres(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(directory, ignore_errors=True)


async def test_postgres_stopped_and_restarted_every_event_accounted_for(
    proxy: Proxy, state_root: Path, own_postgres: LocalPostgres
) -> None:
    dsn = own_postgres.dsn
    await migrate(dsn)
    logger = BidLogger(logger_settings(proxy, state_root), dsn)
    await logger.start()
    bidder = Publisher(proxy.inside, publisher_id="bidder-a", batch_delay=0.005)
    tracker = Publisher(proxy.inside, publisher_id="tracker-a", batch_delay=0.005)
    await bidder.start()
    await tracker.start()
    try:
        await until_heard(bidder, [logger])
        txs = world(1500, start=START, seed=5)
        bids, later = split(txs)
        await publish(bidder, bids)
        await until_counted([logger], len(bids))
        await logger.flush()
        assert await logger.wait_written(20)
        await asyncio.to_thread(own_postgres.stop)
        await publish(tracker, later)
        await until_counted([logger], len(bids) + len(later))
        for _ in range(5):
            await logger.flush()
            await asyncio.sleep(0.3)
        assert len(logger.spool) > 0 and not logger.postgres_up
        assert logger.batches["failed"] > 0
        await asyncio.to_thread(own_postgres.start)
        assert await logger.wait_written(30)
        assert logger.postgres_up
        compare(await minute_rows(dsn, START), expected(txs))
    finally:
        await bidder.close()
        await tracker.close()
        await logger.close()


async def test_a_full_spool_drops_batches_and_says_so_in_the_next(
    proxy: Proxy, state_root: Path
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    settings = logger_settings(proxy, state_root, spool_max_bytes=6_000, flush_interval=3600)
    logger = BidLogger(settings, dead)
    await logger.start()
    bidder = Publisher(proxy.inside, publisher_id="bidder-a", batch_delay=0.005)
    await bidder.start()
    try:
        await until_heard(bidder, [logger])
        sent = 0
        for seed in range(6):
            bids, _ = split(world(60, start=START, seed=100 + seed))
            await publish(bidder, bids)
            sent += len(bids)
            await until_counted([logger], sent)
            await logger.flush()
        assert logger.spool.refused > 0
        dropped = logger.aggregator.dropped["spool_full"]
        assert dropped > 0 and not logger.postgres_up
        # what the spool holds plus what it refused is everything counted
        held = [logger.spool.read(seq) for seq in sorted(logger.spool._sizes)]
        assert sum(b.events for b in held) + dropped == sent + logger.probes  # type: ignore[attr-defined]
        # room again: the next batch says how many events the refused ones held
        for seq in sorted(logger.spool._sizes):
            logger.spool.remove(seq)
        bids, _ = split(world(5, start=START, seed=99))
        await publish(bidder, bids)
        await until_counted([logger], sent + len(bids))
        batch = await logger.flush()
        assert batch is not None
        reported = sum(x.events for x in batch.losses if x.cause == "spool_full")
        assert reported == dropped
    finally:
        await bidder.close()
        await logger.close(drain_timeout=0.1)


async def test_a_batch_postgres_refuses_is_set_aside_and_the_next_goes_through(
    state_root: Path, pg_dsn: str
) -> None:
    class NoProxy:
        outside = f"tcp://127.0.0.1:{free_port()}"  # nothing publishes in this test

    settings = logger_settings(NoProxy(), state_root)  # type: ignore[arg-type]
    logger = BidLogger(settings, pg_dsn)

    def batch(seq: int, creative: int) -> Batch:
        row = AggRow(int(START), 1, creative, "click", 3, 0, 0, 0)
        return Batch(
            logger_id=logger.logger_id, seq=seq, shard=settings.shard, partitions_covered=64,
            partitions_total=64, events=3, rows=[row], coverage=[int(START)], positions=[],
            losses=[], raw=[],
        )  # fmt: skip

    assert logger.spool.put(batch(1, 2**63))  # past bigint: Postgres cannot take it, ever
    assert logger.spool.put(batch(2, 7))
    await logger.start()
    try:
        assert await logger.wait_written(20)
        assert logger.batches["rejected"] == 1 and logger.batches["applied"] == 1
        assert logger.aggregator.dropped == {"rejected": 3}
        assert (logger.spool.bad_directory / f"{1:020d}.batch").exists()
        rows = await fetch(pg_dsn, "SELECT creative_id, events FROM bidlogger_minute")
        assert [(r["creative_id"], r["events"]) for r in rows] == [(7, 3)]
    finally:
        await logger.close()
