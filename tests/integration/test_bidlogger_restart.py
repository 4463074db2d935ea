"""A bid logger process killed (SIGKILL) and restarted while traffic flows: what it counted plus
what it reports missed equals what was published, exactly, and the missing part is no more than
the unflushed window and the time it was down."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bidlogger_world import world
from conftest_bidlogger import (
    PROBE_TS,
    eventually,
    fetch,
    forget_earlier_garbage,
    running_proxy,
    temporary_root,
    txid_in,
)
from test_bus_proxy import Proxy

from fleet.bus import Publisher
from fleet.events import AuctionEvent, encode, topic_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _earlier_garbage() -> None:
    forget_earlier_garbage()


TOTAL = 4  # partitions: every topic sees traffic again after the restart
FLUSH = 0.5
START = 1_796_000_000.0 // 60 * 60


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async with running_proxy() as running:
        yield running


@pytest.fixture
def state_root() -> Iterator[Path]:
    with temporary_root() as root:
        yield root


class LoggerProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> float:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bidlogger",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            line = (await self.process.stdout.readline()).decode()
        assert line.startswith("listening "), line
        self.port = int(line.split()[1])
        return time.monotonic()

    async def events(self, kind: str = "") -> int:
        def get() -> str:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())

        text = await asyncio.to_thread(get)
        total = 0
        for m in re.finditer(r'^bidlogger_events_total\{type="(\w+)"\} (\S+)$', text, re.M):
            if not kind or m.group(1) == kind:
                total += int(float(m.group(2)))
        return total

    async def health(self) -> dict[str, object]:
        def get() -> dict[str, object]:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as response:
                body: dict[str, object] = json.loads(response.read())
                return body

        return await asyncio.to_thread(get)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await self.process.wait()
        return int(self.process.returncode or 0)

    async def reap(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_killed_logger_misses_at_most_the_unflushed_window_and_says_how_much(
    proxy: Proxy, state_root: Path, pg_dsn: str
) -> None:
    env = {
        **os.environ,
        "RTBFLEET_PG_DSN": pg_dsn,
        "RTBFLEET_DATA_DIR": str(state_root),
        "RTBFLEET_EVENT_BUS_OUT": proxy.outside,
        "RTBFLEET_EVENT_PARTITIONS": str(TOTAL),
        "RTBFLEET_BIDLOGGER_STATE_DIR": str(state_root / "logger"),
        "RTBFLEET_BIDLOGGER_PORT": "0",
        "RTBFLEET_BIDLOGGER_FLUSH_SECONDS": str(FLUSH),
        "RTBFLEET_BIDLOGGER_RAW_PARTITIONS": "",
        "RTBFLEET_BIDLOGGER_MAINTENANCE_SECONDS": "3600",
        "RTBFLEET_CACHE_BUS": "false",
        "RTBFLEET_MEMCACHED": "",
        "RTBFLEET_LOG_LEVEL": "WARNING",
    }
    first, second = LoggerProcess(env), LoggerProcess(env)
    publisher = Publisher(proxy.inside, publisher_id="bidder-a", batch_delay=0.005)
    await publisher.start()
    try:
        await first.start()
        async with asyncio.timeout(15):
            while await first.events("auction") == 0:
                txid = txid_in({0, 1, 2, 3}, TOTAL, "r")
                probe = AuctionEvent(
                    txid=txid, ts=PROBE_TS, bidder_id="p", exchange="p", imps=1, outcome="bid"
                )
                publisher.publish_now(topic_for(probe, TOTAL), encode(probe))
                await asyncio.sleep(0.05)
        events = [e for tx in world(6000, start=START, seed=3) for e in tx]
        sent_at: list[float] = []
        cursor = 0

        async def send(seconds: float, per_tick: int = 60) -> None:
            nonlocal cursor
            until = time.monotonic() + seconds
            while time.monotonic() < until and cursor < len(events):
                for e in events[cursor : cursor + per_tick]:
                    publisher.publish(topic_for(e, TOTAL), encode(e))
                    sent_at.append(time.monotonic())
                cursor += per_tick
                await publisher.flush()
                await asyncio.sleep(0.02)

        await send(2.0)
        killed = time.monotonic()
        first.kill()
        await send(1.0)
        up = await second.start()
        health = await second.health()
        assert health["logger_id"] == "bidlogger-0-3of4" and health["shard"] == "0-3/4"
        await send(1.5)
        rest = len(events) - cursor
        await send(30.0, per_tick=max(60, rest // 20 + 1))  # the rest: every topic hears again
        assert cursor >= len(events) and publisher.stats.dropped_payloads == 0
        workload = len(events)

        async def accounted() -> tuple[int, int]:
            counted = await fetch(
                pg_dsn,
                "SELECT coalesce(sum(events), 0)::bigint AS n FROM bidlogger_minute "
                "WHERE minute >= to_timestamp($1)",
                START,
            )
            lost = await fetch(
                pg_dsn,
                "SELECT cause, coalesce(sum(events), 0)::bigint AS n FROM "
                "bidlogger_losses GROUP BY cause",
            )
            return int(counted[0]["n"]), sum(int(r["n"]) for r in lost)

        async def all_accounted() -> bool:
            return sum(await accounted()) >= workload

        try:
            await eventually(all_accounted, 30)
        except TimeoutError:
            raise AssertionError(f"accounted {await accounted()} of {workload}") from None
        assert await second.stop() == 0
        counted, missed = await accounted()
        causes = {r["cause"] for r in await fetch(pg_dsn, "SELECT cause FROM bidlogger_losses")}
        assert counted + missed == workload
        assert causes == {"restart"}
        # at most what was sent from one flush before the kill until just after the restart
        window = sum(1 for t in sent_at if killed - FLUSH - 0.5 <= t <= up + 1.0)
        assert 0 < missed <= window
    finally:
        await publisher.close()
        await first.reap()
        await second.reap()
