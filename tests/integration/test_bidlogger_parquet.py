"""The raw sample as hourly Parquet files in an S3-compatible store (moto's server, started
here): the files wait on disk while the store is down, then arrive under the documented layout,
and read back they hold the same rows as the raw Postgres table."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from bidlogger_world import world
from conftest_bidlogger import (
    MotoServer,
    aws_credentials,
    eventually,
    fetch,
    forget_earlier_garbage,
    logger_settings,
    publish,
    running_proxy,
    temporary_root,
    until_counted,
    until_heard,
)
from test_bus_proxy import Proxy

from bidlogger import BidLogger
from fleet.bus import Publisher
from fleet.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _earlier_garbage() -> None:
    forget_earlier_garbage()


START = 1_796_000_000.0 // 3600 * 3600 + 3000  # the workload spans two hours
KEY = re.compile(
    r"^raw/events/type=(?P<type>\w+)/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P<logger>[\w.-]+)-(?P<seq>\d+)\.parquet$"
)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async with running_proxy() as running:
        yield running


@pytest.fixture
def state_root() -> Iterator[Path]:
    with temporary_root() as root:
        yield root


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """moto's S3 server on a free loopback port, with fake credentials for boto3."""
    aws_credentials(monkeypatch)
    server = MotoServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def canonical(row: dict[str, object]) -> str:
    return json.dumps(row, sort_keys=True)


async def test_parquet_files_wait_for_the_store_and_match_the_raw_table(
    proxy: Proxy, state_root: Path, pg_dsn: str, moto: MotoServer
) -> None:
    await asyncio.to_thread(moto.stop)  # the store is down when the files are ready
    logger, publisher = await _uploading_logger(proxy, state_root, pg_dsn, moto, "raw-sample")
    try:
        events = await _logged(logger, publisher, 800, seed=9)
        # the store is down: the files wait in the outbox
        await eventually(lambda: logger.uploads["failed"] > 0, 10)
        waiting = sorted(logger.segments.outbox.rglob("*.parquet"))
        assert waiting and logger.uploads["ok"] == 0
        await asyncio.to_thread(moto.start)
        client = moto.client()
        client.create_bucket(Bucket="raw-sample")
        try:
            await eventually(lambda: not any(logger.segments.outbox.rglob("*.parquet")), 60)
        except TimeoutError:
            left = sorted(p.name for p in logger.segments.outbox.rglob("*.parquet"))
            raise AssertionError(f"uploads {logger.uploads}, still waiting: {left}") from None
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="raw-sample").get("Contents", [])]
        assert len(keys) == len(waiting)
        from_files: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            match = KEY.match(key)
            assert match, key
            assert match["logger"] == logger.logger_id
            target = state_root / "download.parquet"
            client.download_file("raw-sample", key, str(target))
            rows = pq.read_table(target).to_pylist()
            assert rows
            for row in rows:
                when = datetime.fromtimestamp(row["ts"], UTC)
                assert (f"{when:%Y-%m-%d}", f"{when:%H}") == (match["date"], match["hour"])
                from_files[match["type"]].append(canonical(row))
        from_table: dict[str, list[str]] = defaultdict(list)
        for r in await fetch(pg_dsn, "SELECT event_type, event::text AS e FROM bidlogger_raw"):
            event = json.loads(r["e"])
            assert event.pop("type") == r["event_type"]
            from_table[r["event_type"]].append(canonical(event))
        assert {t: sorted(v) for t, v in from_files.items()} == {
            t: sorted(v) for t, v in from_table.items()
        }
        assert sum(len(v) for v in from_table.values()) == len(events) + logger.probes  # type: ignore[attr-defined]
    finally:
        await publisher.close()
        await logger.close()


async def test_a_missing_bucket_keeps_the_files_until_it_exists(
    proxy: Proxy, state_root: Path, pg_dsn: str, moto: MotoServer
) -> None:
    """boto3 wraps a refusal such as NoSuchBucket in its own exception: the uploader counts it,
    keeps the files and retries, instead of stopping for good."""
    logger, publisher = await _uploading_logger(proxy, state_root, pg_dsn, moto, "late-bucket")
    try:
        await _logged(logger, publisher, 100, seed=5)
        await eventually(lambda: logger.uploads["failed"] >= 2, 10)  # refused, and retried
        waiting = sorted(logger.segments.outbox.rglob("*.parquet"))
        assert waiting and logger.uploads["ok"] == 0
        moto.client().create_bucket(Bucket="late-bucket")
        await eventually(lambda: not any(logger.segments.outbox.rglob("*.parquet")), 30)
        assert logger.uploads["ok"] == len(waiting)
    finally:
        await publisher.close()
        await logger.close()


async def _uploading_logger(
    proxy: Proxy, state_root: Path, pg_dsn: str, moto: MotoServer, bucket: str
) -> tuple[BidLogger, Publisher]:
    """A started logger keeping every partition raw, uploading to ``bucket`` on moto, and a
    started publisher it hears."""
    settings = logger_settings(
        proxy,
        state_root,
        raw_partitions="all",
        object_store=f"s3://{bucket}/raw",
        s3_endpoint=moto.url,
        upload_retry=0.2,
    )
    logger = BidLogger(settings, pg_dsn)
    await logger.start()
    publisher = Publisher(proxy.inside, publisher_id="bidder-a", batch_delay=0.005)
    await publisher.start()
    await until_heard(publisher, [logger])
    return logger, publisher


async def _logged(
    logger: BidLogger, publisher: Publisher, transactions: int, seed: int
) -> list[Any]:
    """The events of ``transactions`` published, counted, and written, segments closed."""
    events = [e for tx in world(transactions, start=START, seed=seed) for e in tx]
    await publish(publisher, events)
    await until_counted([logger], len(events))
    await logger.flush(close_segments=True)
    assert await logger.wait_written(20)
    return events
