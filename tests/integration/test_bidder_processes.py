"""``python -m bidder`` with several server processes sharing one port: all of them serve,
/metrics on any of them shows the whole bidder (the cache's metrics too), a crashed server comes
back, SIGTERM stops everything cleanly, and a config UPDATE reaches every server through the
config watcher and the coherence bus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from conftest_bidder import BidderProcess, banner_request, metric, post, write_catch_all
from conftest_cache import proxy_process

from fleet.portfolio import load_document
from sim.portfolio import catch_all


def get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def test_two_servers_share_the_port_and_stop_cleanly(tmp_path: Path) -> None:
    bidder = BidderProcess(
        {
            "RTBFLEET_BIDDER_PROCESSES": "2",
            "RTBFLEET_BIDDER_PORTFOLIO_FILE": str(write_catch_all(tmp_path)),
            "RTBFLEET_BIDDER_ID": "itest",
        },
        tmp_path / "bidder.log",
    )
    try:
        bidder.wait_ready()
        servers = bidder.children()
        assert len(servers) == 2, bidder.log()
        seen: set[str] = set()
        sent = 0
        deadline = time.monotonic() + 15
        while seen != {"itest-0", "itest-1"} or sent < 40:  # the second may still be starting
            assert time.monotonic() < deadline, (seen, bidder.log())
            request = json.dumps(banner_request(f"m{sent}")).encode()
            status, body = post(f"{bidder.url}/openrtb2/bid", request)  # a new connection each
            assert status == 200, bidder.log()
            sent += 1
            seen.add(json.loads(body)["seatbid"][0]["bid"][0]["id"].rsplit(":", 1)[1])
        text = get(f"{bidder.url}/metrics")
        assert metric(text, "bidder_requests_total", outcome="bid", reason="bid") == sent, text

        os.kill(servers[0], signal.SIGKILL)  # a crash: the supervisor starts a new one
        deadline = time.monotonic() + 15
        while len(set(bidder.children()) - set(servers)) < 1:
            assert time.monotonic() < deadline, bidder.log()
            time.sleep(0.05)
        bidder.wait_ready()
        for i in range(10):
            request = json.dumps(banner_request(f"n{i}")).encode()
            status, _ = post(f"{bidder.url}/openrtb2/bid", request)
            assert status == 200, bidder.log()
        current = bidder.children()
    finally:
        code = bidder.stop()
    assert code == 0, bidder.log()
    for pid in current:
        assert not Path(f"/proc/{pid}").exists(), f"server {pid} outlived the supervisor"
    assert "restarting" in bidder.log(), bidder.log()


def test_a_config_update_reaches_every_server_through_the_watcher(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The whole path with real processes: a coherence-bus proxy (``python -m fleet.proxy``), the
    config watcher (``python -m cache watcher``) and ``python -m bidder`` with two servers.
    An UPDATE in Postgres pauses the only campaign on both servers, and /metrics (multiprocess
    exposition) shows the cache's metrics of both."""
    asyncio.run(load_document(pg_dsn, catch_all()))
    with proxy_process() as (bus_in, bus_out):
        env = {
            "RTBFLEET_PG_DSN": pg_dsn,
            "RTBFLEET_COHERENCE_BUS_IN": bus_in,
            "RTBFLEET_COHERENCE_BUS_OUT": bus_out,
            "RTBFLEET_CACHE_TTL_SECONDS": "600",  # only the bus can deliver the change in time
            "RTBFLEET_BIDDER_SNAPSHOT_REFRESH": "600",
        }
        full = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
        watcher_log = (tmp_path / "watcher.log").open("wb")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "cache", "watcher"],
            env={**full, **env, "PYTHONUNBUFFERED": "1"},
            stdout=watcher_log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        bidder = BidderProcess(
            {**env, "RTBFLEET_BIDDER_PROCESSES": "2", "RTBFLEET_BIDDER_ID": "itest"},
            tmp_path / "bidder.log",
        )
        try:
            bidder.wait_ready()
            seen: set[str] = set()
            deadline = time.monotonic() + 15
            while seen != {"itest-0", "itest-1"}:  # both servers listen and bid
                assert time.monotonic() < deadline, (seen, bidder.log())
                request = json.dumps(banner_request(f"before{len(seen)}")).encode()
                status, body = post(f"{bidder.url}/openrtb2/bid", request)
                if status == 200:
                    seen.add(json.loads(body)["seatbid"][0]["bid"][0]["id"].rsplit(":", 1)[1])
                else:
                    time.sleep(0.05)
            assert watcher_leads(pg_dsn), (tmp_path / "watcher.log").read_text()
            asyncio.run(execute(pg_dsn, "UPDATE campaigns SET status = 'paused' WHERE id = 1"))
            # Both servers stop bidding: a new connection each, so both are reached.
            deadline = time.monotonic() + 5
            no_bids_in_a_row = 0
            while no_bids_in_a_row < 20:
                assert time.monotonic() < deadline, bidder.log()
                request = json.dumps(banner_request(f"after{no_bids_in_a_row}")).encode()
                status, _ = post(f"{bidder.url}/openrtb2/bid", request)
                no_bids_in_a_row = no_bids_in_a_row + 1 if status == 204 else 0
            # Both servers heard the invalidation; the snapshot was loaded at start and again
            # after it (a fill announced on the bus may spare the other server its load). A
            # server copies the cache's counters into the values files once a second.
            deadline = time.monotonic() + 5
            while True:
                text = get(f"{bidder.url}/metrics")
                loads = metric(text, "cache_hits_total", tier="l3", namespace="config")
                heard = metric(text, "cache_invalidations_total", namespace="config", source="bus")
                applied = metric(text, "bidder_config_loads_total", result="applied")
                if loads >= 2 and heard >= 2 and applied >= 4:
                    break
                assert time.monotonic() < deadline, (loads, heard, applied, text, bidder.log())
                time.sleep(0.1)
            assert metric(text, "cache_entries", namespace="config") == 2, text
        finally:
            code = bidder.stop()
            watcher.terminate()
            watcher.wait(timeout=10)
            watcher_log.close()
        assert code == 0, bidder.log()


def watcher_leads(dsn: str, timeout: float = 10.0) -> bool:
    """The watcher holds its advisory lock (it is listening for config changes)."""

    async def leads() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                held = await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                )
                if held:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await conn.close()

    return asyncio.run(leads())


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
