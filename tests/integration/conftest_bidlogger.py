"""Helpers of the bid-logger integration tests: a real bus proxy process, publishers that send
synthetic transactions as the bidder and the tracker do, a moto S3 server, and queries."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from test_bus_proxy import Proxy

from bidlogger import BidLogger, BidloggerSettings
from fleet.bus import Publisher
from fleet.events import AnyEvent, AuctionEvent, encode, event_type, partition_of, topic_for
from fleet.processes import wait_for_port
from fleet.settings import FleetSettings

BIDDER_TYPES = ("auction", "bid")


def forget_earlier_garbage() -> None:
    """Collect the garbage earlier tests left before this one starts. What their unclosed
    sockets and transports say when finalised is printed, not raised against this test (where
    pytest would otherwise report it, since it arrives during this test)."""

    def show(unraisable: sys.UnraisableHookArgs) -> None:
        print(f"left by an earlier test: {unraisable.exc_value!r}", file=sys.stderr)

    previous = sys.unraisablehook
    sys.unraisablehook = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            gc.collect()
    finally:
        sys.unraisablehook = previous


PROBE_TS = 1_700_000_000.0  # probes count in a minute of their own, far from the workload


@contextlib.asynccontextmanager
async def running_proxy() -> AsyncIterator[Proxy]:
    """A real ``python -m fleet.proxy`` process on free loopback ports."""
    running = await Proxy.start()
    try:
        yield running
    finally:
        await running.stop()


@contextlib.contextmanager
def temporary_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="rtbfleet-bidlogger-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def logger_settings(
    proxy: Proxy, state_dir: Path, *, partitions: str = "all", total: int = 64, **kw: Any
) -> BidloggerSettings:
    fleet = dataclasses.replace(
        FleetSettings(), event_bus_out=proxy.outside, event_partitions=total, data_dir=state_dir
    )
    settings = BidloggerSettings(
        partitions=partitions,
        state_dir=str(state_dir / f"logger-{partitions.replace(',', '_')}"),
        raw_partitions=kw.pop("raw_partitions", ""),
        flush_interval=kw.pop("flush_interval", 0.2),
        maintenance_interval=kw.pop("maintenance_interval", 3600.0),
        heartbeat_timeout=kw.pop("heartbeat_timeout", 2.0),
        fleet=fleet,
        **kw,
    )
    settings.check_partitions()
    return settings


def txid_in(partitions: set[int], total: int, tag: str) -> str:
    for i in range(100_000):
        txid = f"probe-{tag}-{i}"
        if partition_of(txid, total) in partitions:
            return txid
    raise AssertionError("no txid found")


async def until_heard(
    publisher: Publisher, loggers: list[BidLogger], total: int = 64, timeout: float = 15.0
) -> None:
    """Probe (auction events in a minute of their own) until every logger hears its probe."""
    async with asyncio.timeout(timeout):
        waiting = list(loggers)
        while waiting:
            for logger in waiting:
                txid = txid_in(set(logger.settings.held), total, logger.logger_id)
                probe = AuctionEvent(
                    txid=txid, ts=PROBE_TS, bidder_id="probe", exchange="p", imps=1, outcome="bid"
                )
                publisher.publish_now(topic_for(probe, total), encode(probe))
            await asyncio.sleep(0.05)
            waiting = [lg for lg in waiting if lg.aggregator.events_in["auction"] == 0]
    await asyncio.sleep(0.3)  # probes still on their way arrive
    for logger in loggers:
        logger.probes = logger.aggregator.events_in["auction"]  # type: ignore[attr-defined]


async def publish(
    publisher: Publisher, events: list[AnyEvent], total: int = 64, pause_every: int = 200
) -> dict[str, int]:
    """Publish in order, yielding now and then; returns the count per topic."""
    per_topic: dict[str, int] = defaultdict(int)
    for i, event in enumerate(events):
        topic = topic_for(event, total)
        publisher.publish(topic, encode(event))
        per_topic[topic] += 1
        if i % pause_every == pause_every - 1:
            await asyncio.sleep(0.001)
    await publisher.flush()
    assert publisher.stats.dropped_payloads == 0
    return per_topic


def split(transactions: list[list[AnyEvent]]) -> tuple[list[AnyEvent], list[AnyEvent]]:
    """What the bidder publishes (auction, bid) and what the tracker does (the rest)."""
    flat = [e for tx in transactions for e in tx]
    bidder = [e for e in flat if event_type(e) in BIDDER_TYPES]
    tracker = sorted((e for e in flat if event_type(e) not in BIDDER_TYPES), key=lambda e: e.ts)
    return bidder, tracker


async def until_counted(loggers: list[BidLogger], want: int, timeout: float = 30.0) -> None:
    """Until the loggers together folded ``want`` workload events (probes excluded)."""

    def counted() -> int:
        return sum(sum(lg.aggregator.events_in.values()) for lg in loggers) - probes(loggers)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while counted() < want:  # noqa: ASYNC110 (polling another task's counters)
                await asyncio.sleep(0.05)
    assert counted() == want


async def eventually(check: Callable[[], Any], timeout: float, period: float = 0.05) -> None:
    """Until ``check()`` (a value or an awaitable) is true; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(period)


def probes(loggers: list[BidLogger]) -> int:
    return sum(getattr(lg, "probes", 0) for lg in loggers)


async def minute_rows(dsn: str, since: float) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT extract(epoch FROM minute)::bigint AS minute, campaign_id, creative_id, "
                "event_type, events, spend_micros, estimated, events_seen, spend_micros_seen, "
                "partitions_covered, partitions_total "
                "FROM bidlogger_minute_fleet WHERE minute >= to_timestamp($1)",
                since,
            )
        )
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


class MotoServer:
    """moto's S3 in server mode, on loopback, as a child process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_port("127.0.0.1", self.port, 30):
            self.stop()
            raise AssertionError("moto server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")


def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto; nothing reaches AWS (every client gets a loopback endpoint)."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
