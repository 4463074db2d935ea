"""Helpers for the cache's integration tests: settings, a bus proxy process, worker processes.

Imported by tests/integration/test_cache_*.py (fixtures are re-exported there by import).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import zmq

from cache.codec import Message, encode_message
from cache.settings import CacheSettings
from fleet.bus.protocol import KIND_DATA, encode_body, encode_header
from fleet.pg import free_port
from fleet.settings import FleetSettings

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "cache" / "cache_worker.py"


def cache_settings(
    memcached: tuple[str, int] | None = None,
    bus: tuple[str, str] | None = None,
    pg_dsn: str = "",
    **overrides: Any,
) -> CacheSettings:
    """Settings for a test: memcached and the bus only when given; short timeouts."""
    fleet = FleetSettings(
        pg_dsn=pg_dsn,
        memcached=f"{memcached[0]}:{memcached[1]}" if memcached else "",
        coherence_bus_in=bus[0] if bus else "tcp://127.0.0.1:1",
        coherence_bus_out=bus[1] if bus else "tcp://127.0.0.1:1",
    )
    base: dict[str, Any] = {
        "bus": bus is not None,
        "tick": 0.02,
        "l2_timeout": 0.3,
        "l2_retry": 0.2,
        "lease_seconds": 2,
        "load_timeout": 2.0,
        "refresh_retry": 0.1,
        "heartbeat_timeout": 1.0,
        "watcher_retry": 0.2,
    }
    base.update(overrides)
    return dataclasses.replace(CacheSettings(), fleet=fleet, **base)


def settings_env(settings: CacheSettings) -> dict[str, str]:
    """The RTBFLEET_* variables that rebuild ``settings`` in a child process."""
    f = settings.fleet
    return {
        "RTBFLEET_PG_DSN": f.pg_dsn,
        "RTBFLEET_MEMCACHED": f.memcached,
        "RTBFLEET_COHERENCE_BUS_IN": f.coherence_bus_in,
        "RTBFLEET_COHERENCE_BUS_OUT": f.coherence_bus_out,
        "RTBFLEET_CACHE_BUS": "1" if settings.bus else "0",
        "RTBFLEET_CACHE_TICK_SECONDS": str(settings.tick),
        "RTBFLEET_CACHE_TTL_SECONDS": str(settings.default_ttl),
        "RTBFLEET_CACHE_MAX_STALE_SECONDS": str(settings.max_stale),
        "RTBFLEET_CACHE_L2_TIMEOUT_SECONDS": str(settings.l2_timeout),
        "RTBFLEET_CACHE_L2_RETRY_SECONDS": str(settings.l2_retry),
        "RTBFLEET_CACHE_LEASE_SECONDS": str(settings.lease_seconds),
        "RTBFLEET_CACHE_LOAD_TIMEOUT_SECONDS": str(settings.load_timeout),
        "RTBFLEET_CACHE_REFRESH_RETRY_SECONDS": str(settings.refresh_retry),
        "RTBFLEET_CACHE_HEARTBEAT_TIMEOUT_SECONDS": str(settings.heartbeat_timeout),
        "RTBFLEET_CACHE_WATCHER_RETRY_SECONDS": str(settings.watcher_retry),
        "RTBFLEET_LOG_LEVEL": "WARNING",
    }


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@contextlib.contextmanager
def proxy_process() -> Iterator[tuple[str, str]]:
    """A real ``python -m fleet.proxy`` on free loopback ports: (in, out) endpoints. A port
    taken by another process between being found free and being bound is tried again with new
    ports (a few times); any other failure names the proxy's own error line."""
    for attempt in range(3):
        inside = f"tcp://127.0.0.1:{free_port()}"
        outside = f"tcp://127.0.0.1:{free_port()}"
        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.proxy", "--in", inside, "--out", outside],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=child_env({}),
                cwd=ROOT,
                text=True,
            )
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()  # "ready in=... out=..." once bound
                if not line.startswith("ready"):
                    proc.wait(timeout=10)
                    errors.seek(0)
                    error = errors.read().strip()
                    if "in use" in error and attempt < 2:
                        continue
                    raise RuntimeError(f"bus proxy did not start: {line!r} {error[-300:]!r}")
                yield inside, outside
                return
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


@pytest.fixture
def bus() -> Iterator[tuple[str, str]]:
    with proxy_process() as endpoints:
        yield endpoints


@pytest.fixture
async def pg_conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def seed_config(conn: asyncpg.Connection, campaigns: int = 3) -> None:
    """One advertiser and a few campaigns, enough for a config snapshot."""
    await conn.execute(
        "INSERT INTO advertisers (id, name, domain) VALUES (1, 'Acme', 'acme.example')"
    )
    for i in range(1, campaigns + 1):
        await conn.execute(
            """INSERT INTO campaigns (id, advertiser_id, name, goal_type, goal_price_micros,
                   max_bid_cpm_micros, daily_budget_micros, total_budget_micros)
               VALUES ($1, 1, $2, 'CPC', 500000, 2000000, 1000000000, 10000000000)""",
            i,
            f"campaign {i}",
        )


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate()`` (sync or async) until true or ``timeout``; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result or time.monotonic() >= deadline:
            return bool(result)
        await asyncio.sleep(interval)


class Worker:
    """A child process running tests/cache/cache_worker.py: commands on stdin, JSON lines out
    (read by a thread into ``lines``)."""

    def __init__(self, name: str, env: dict[str, str], args: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(env),
            cwd=ROOT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.messages: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                with contextlib.suppress(json.JSONDecodeError):
                    self.lines.put(json.loads(line))

    def expect(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message of kind ``event`` (others are kept in ``messages``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {event!r} within {timeout} s")
            try:
                message = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.stderr_tail()}") from None
                continue
            self.messages.append(message)
            if message.get("event") == event:
                return message

    def drain(self) -> list[dict[str, Any]]:
        """Every message received so far and not yet returned by ``expect``."""
        while True:
            try:
                self.messages.append(self.lines.get_nowait())
            except queue.Empty:
                return self.messages

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                self.send("quit")
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr_tail()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stderr_tail(self) -> str:
        """The end of what it wrote on stderr, once it has exited."""
        if self.proc.stderr is None or self.proc.poll() is None or self.proc.stderr.closed:
            return str(getattr(self, "_stderr", ""))
        text = self.proc.stderr.read()
        self._stderr = (getattr(self, "_stderr", "") + text)[-4000:]
        return self._stderr


class Injector:
    """A coherence publisher speaking the bus wire format by hand, so that a test can lose a
    message on purpose (``skip``), go silent, or come back as a new incarnation."""

    def __init__(self, endpoint: str, publisher_id: str = "injector") -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.context.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.publisher_id = publisher_id.encode()
        self.incarnation = 1
        self.streams: dict[str, list[int]] = {}  # topic -> [seq, total]

    async def wait_subscribed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sock.recv(zmq.NOBLOCK)
                await asyncio.sleep(0.05)  # let every subscription arrive
                return
            except zmq.Again:
                await asyncio.sleep(0.01)
        raise TimeoutError("no subscriber reached the injector")

    def send(self, message: Message) -> None:
        topic = f"co.cache.{message.namespace}"
        stream = self.streams.setdefault(topic, [0, 0])
        stream[0] += 1
        stream[1] += 1
        header = encode_header(
            KIND_DATA, self.incarnation, stream[0], stream[1], time.time(), self.publisher_id
        )
        self.sock.send_multipart([topic.encode(), header, encode_body([encode_message(message)])])

    def skip(self, namespace: str) -> None:
        """Lose the next message on ``namespace``: its sequence number is used, nothing sent."""
        stream = self.streams.setdefault(f"co.cache.{namespace}", [0, 0])
        stream[0] += 1
        stream[1] += 1

    def restart(self) -> None:
        """Come back as a new incarnation, without saying goodbye."""
        self.incarnation += 1
        self.streams.clear()

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()


class Process:
    """A child process (``python -m ...``) with its output collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(env),
            cwd=ROOT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                self.output.append(line.rstrip())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return int(self.proc.returncode)


async def watcher_leader(conn: asyncpg.Connection) -> int | None:
    """The pid of the watcher process holding the lead (from its connection's name), or None."""
    name = await conn.fetchval(
        """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted
             AND a.application_name LIKE 'rtbfleet-cache-watcher-%'"""
    )
    return None if name is None else int(str(name).rsplit("-", 1)[1])
