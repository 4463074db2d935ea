"""The tracker as a process (``python -m tracker``) on the fleet's HTTP core: its paths over
real HTTP against real Postgres, on the fleet clock, with /healthz, /readyz and /metrics; and
hostile clients (oversized, slow, malformed) answered as the bidder answers them."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import asyncpg
import pytest
from conftest_tracker import KEY, NOW, notice_query, seed

from fleet.pg import free_port

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60.0


class TrackerProcess:
    def __init__(self, dsn: str, port: int, extra: dict[str, str] | None = None) -> None:
        self.port = port
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
        env.update(
            RTBFLEET_PG_DSN=dsn,
            RTBFLEET_TRACKER_PORT=str(port),
            RTBFLEET_TRACKER_URL=f"http://127.0.0.1:{port}",
            RTBFLEET_SIGNING_KEY=KEY.decode(),
            RTBFLEET_MEMCACHED="",
            RTBFLEET_EVENT_BUS_IN=f"tcp://127.0.0.1:{free_port()}",
            # the fleet clock reads NOW from the moment the process starts (notices are signed
            # for then): every time of day the tracker reads is the fleet's
            RTBFLEET_CLOCK_ORIGIN=repr(time.time()),
            RTBFLEET_CLOCK_START=repr(NOW),
            RTBFLEET_HTTP_HEADER_TIMEOUT="1",
            RTBFLEET_HTTP_BODY_TIMEOUT="1",
            RTBFLEET_HTTP_MAX_BODY_BYTES="65536",
            **(extra or {}),
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker"], env=env, stderr=subprocess.PIPE, text=True
        )

    def get(self, target: str, method: str = "GET") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, target)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the tracker exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the tracker did not become ready")

    def stop(self) -> tuple[int, str]:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture
def tracker(pg_dsn: str) -> Iterator[TrackerProcess]:
    asyncio.run(seed(pg_dsn))
    process = TrackerProcess(pg_dsn, free_port())
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


async def _spend(dsn: str) -> list[tuple[int, str, int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT campaign_id, day::text, spent_micros, impressions FROM campaign_spend_daily"
            " ORDER BY campaign_id, day"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_notices_over_http_move_money_once_on_the_fleet_clock(
    tracker: TrackerProcess, pg_dsn: str
) -> None:
    assert tracker.get("/healthz")[0] == 200
    # a billing notice at 2.5 USD CPM: 2500 micros, once; its duplicate is answered, not paid
    query = notice_query("bill", "h1:1:bidder-0")
    assert tracker.get("/bill?" + query)[0] in (200, 204)
    assert tracker.get("/bill?" + query)[0] in (200, 204)
    # the Tokyo campaign's day: the fleet clock's (2027-01-15 17:00 in Tokyo), not the wall's
    tokyo = notice_query("bill", "h2:1:bidder-0", campaign=2, creative=20, currency="EUR")
    assert tracker.get("/bill?" + tokyo)[0] in (200, 204)
    assert _spend_rows(pg_dsn) == [(1, "2027-01-15", 2500, 1), (2, "2027-01-15", 2500, 1)]
    # the impression pixel and a win notice on the same routes
    assert tracker.get("/imp?" + notice_query("imp", "h1:1:bidder-0"))[0] == 200
    assert tracker.get("/win?" + notice_query("win", "h1:1:bidder-0"))[0] in (200, 204)
    metrics = tracker.get("/metrics")[1].decode()
    assert 'tracker_notices_total{kind="bill",outcome="counted"} 2.0' in metrics
    assert "tracker_notices_total" in metrics and "http_" in metrics


def _spend_rows(dsn: str) -> list[tuple[int, str, int, int]]:
    return asyncio.run(_spend(dsn))


def test_bad_notices_get_a_reason_and_move_no_money(tracker: TrackerProcess, pg_dsn: str) -> None:
    forged = notice_query("bill", "f1:1:bidder-0", key=b"someone-else-s-key-0123456789")
    status, body = tracker.get("/bill?" + forged)
    assert status == 403 and b"error" in body
    status, body = tracker.get("/bill?" + urlencode({"txid": "x"}))
    assert status in (400, 403) and b"error" in body
    status, _ = tracker.get("/bill?" + notice_query("bill", "f2:1:bidder-0"), method="DELETE")
    assert status == 405
    assert tracker.get("/nowhere")[0] == 404
    assert _spend_rows(pg_dsn) == []


def _raw(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_hostile_clients_are_answered_and_cut_off(tracker: TrackerProcess) -> None:
    # malformed request line and headers: 400, the connection closed
    assert _raw(tracker.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _raw(tracker.port, b"GET /bill HTTP/1.1\r\nHost x\r\n\r\n").startswith(b"HTTP/1.1 400")
    # an oversized postback body: 413 before it is read
    big = b"POST /postback HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 70000
    assert _raw(tracker.port, big).startswith(b"HTTP/1.1 413")
    # an oversized header block
    huge = b"GET /imp?" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    assert _raw(tracker.port, huge)[:12] in (b"HTTP/1.1 431", b"HTTP/1.1 414", b"HTTP/1.1 400")
    # a slow head (a slowloris): closed after the head timeout, with a 408 or nothing
    with socket.create_connection(("127.0.0.1", tracker.port), timeout=10) as sock:
        sock.sendall(b"GET /imp HTTP/1.1\r\n")
        started = time.monotonic()
        sock.settimeout(10)
        data = sock.recv(65536)
        while data and not data.endswith(b"}"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
        assert time.monotonic() - started < 9
        assert data == b"" or data.startswith(b"HTTP/1.1 408")
    # and the tracker still serves
    assert tracker.get("/healthz")[0] == 200


def test_a_bad_setting_stops_the_tracker_with_one_line(pg_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
    env.update(RTBFLEET_PG_DSN=pg_dsn, RTBFLEET_SIGNING_KEY="short")
    proc = subprocess.run(
        [sys.executable, "-m", "tracker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "RTBFLEET_SIGNING_KEY" in lines[0]


def test_a_stop_is_clean(pg_dsn: str) -> None:
    asyncio.run(seed(pg_dsn))
    process = TrackerProcess(pg_dsn, free_port())
    try:
        process.wait_ready()
        assert process.get("/bill?" + notice_query("bill", "s1:1:bidder-0"))[0] in (200, 204)
    finally:
        code, err = process.stop()
    assert code == 0, err
    assert _spend_rows(pg_dsn) == [(1, "2027-01-15", 2500, 1)]
