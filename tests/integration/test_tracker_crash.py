"""A tracker process killed in the middle of its batches: no acknowledged notice is lost, no
effect is left without its dedupe row, and the exchange's retries then count each notice once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pytest
from conftest_tracker import KEY, NOW, notice_query, seed, tracker_world

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "tracker" / "tracker_worker.py"
NOTICES = 3000


def worker_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(
        {
            "RTBFLEET_PG_DSN": dsn,
            "RTBFLEET_SIGNING_KEY": KEY.decode(),
            "RTBFLEET_USER_KEY_SECRET": "integration-user-key-secret-000000",
            "RTBFLEET_MEMCACHED": "",
            "RTBFLEET_TRACKER_BATCH_MAX": "100",
            "RTBFLEET_LOG_LEVEL": "WARNING",
            "TRACKER_WORKER_NOW": str(NOW),
        }
    )
    return env


def run_and_kill(dsn: str, queries: list[str]) -> list[str]:
    """Feed the worker every notice, SIGKILL it after 400 acknowledgements: the txids it
    acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=worker_env(dsn),
        cwd=ROOT,
        text=True,
    )
    acked: list[str] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

        def feed() -> None:
            assert proc.stdin is not None
            try:
                for q in queries:
                    proc.stdin.write(q + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # killed while feeding

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        deadline = time.monotonic() + 60
        while len(acked) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.split()[1])
        proc.send_signal(signal.SIGKILL)  # in the middle of its batches
        acked += [line.split()[1] for line in proc.stdout.read().splitlines() if line]
        feeder.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
    return acked


async def test_a_tracker_killed_mid_batch_loses_no_acknowledged_notice(pg_dsn: str) -> None:
    await seed(pg_dsn)
    queries = [notice_query("bill", f"k{i}:1:b0", price="2.5") for i in range(NOTICES)]
    acked = await asyncio.to_thread(run_and_kill, pg_dsn, queries)
    assert 400 <= len(acked) < NOTICES, "the kill should land in the middle of the run"

    conn = await asyncpg.connect(pg_dsn)
    try:
        # one snapshot for rows and effects: the killed process's last statement may still be
        # running in its backend and commit between two separate reads
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch("SELECT txid FROM tracker_notices WHERE kind = 'bill'")
            spent, impressions = await conn.fetchrow(
                "SELECT sum(spent_micros), sum(impressions) FROM campaign_spend"
            )
        counted = {r["txid"] for r in rows}
        assert set(acked) <= counted  # every acknowledged notice is durable
        assert (spent, impressions) == (2_500 * len(counted), len(counted))  # effects == rows
    finally:
        await conn.close()

    # the exchange retries everything it did not see acknowledged (and some it did)
    async with tracker_world(pg_dsn) as w:
        for q in queries:
            assert (await w.get("/bill", q)).status == 204
    conn = await asyncpg.connect(pg_dsn)
    try:
        spent, impressions = await conn.fetchrow(
            "SELECT sum(spent_micros), sum(impressions) FROM campaign_spend"
        )
    finally:
        await conn.close()
    assert (spent, impressions) == (2_500 * NOTICES, NOTICES)
