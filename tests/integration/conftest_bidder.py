"""Helpers for the bidder's integration tests: settings, an in-process service, a raw HTTP/1.1
client that shows exactly what went over the wire, and bid requests written for these tests."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
from prometheus_client import CollectorRegistry

from bidder.service import BidderService
from bidder.settings import BidderSettings
from sim.portfolio import catch_all

SIGNING_KEY = "integration-test-signing-key-0123456789"


def make_settings(**env: str) -> BidderSettings:
    """Test settings: any port, no memcached, no bus, no shedding (a busy test machine must not
    turn expected bids into shed no-bids), a long idle timeout, unless given; ``env``
    overrides."""
    base = {
        "RTBFLEET_BIDDER_SHED": "0",
        "RTBFLEET_BIDDER_PORT": "0",
        "RTBFLEET_SIGNING_KEY": SIGNING_KEY,
        "RTBFLEET_MEMCACHED": "",
        "RTBFLEET_BIDDER_PUBLISH_EVENTS": "0",
        "RTBFLEET_CACHE_BUS": "0",
        "RTBFLEET_BIDDER_DRAIN_TIMEOUT": "1",
        "RTBFLEET_BIDDER_PACING": "0",  # no pacer here: the recorded-spend gate alone
        # tests hold a connection across slow steps (a Postgres restart on a loaded machine):
        # the 15 s default would close it under them
        "RTBFLEET_HTTP_IDLE_TIMEOUT": "120",
    }
    base.update(env)
    return BidderSettings.from_env(base, env_file=None)


def write_catch_all(directory: Path) -> Path:
    path = directory / "catch-all.json"
    path.write_text(json.dumps(catch_all()))
    return path


@contextlib.asynccontextmanager
async def running_service(
    settings: BidderSettings, *, wait_ready: bool = True
) -> AsyncIterator[BidderService]:
    service = BidderService(settings, registry=CollectorRegistry())
    try:
        await service.start()
        if wait_ready:
            await service.wait_ready(20)
        yield service
    finally:
        await service.stop()


def banner_request(rid: str = "req-1", **extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "id": rid,
        "at": 2,
        "tmax": 120,
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.1, "bidfloorcur": "USD"}],
        "site": {"id": "s1", "domain": "news.example.com", "page": "https://news.example.com/a"},
        "device": {
            "ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
            "ip": "203.0.113.7",
            "os": "iOS",
            "devicetype": 4,
            "geo": {"country": "USA"},
        },
        "user": {"id": "user-1"},
    }
    req.update(extra)
    return req


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        body = self.body
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)


@dataclass
class RawClient:
    """One keep-alive connection; ``send`` writes bytes as given, ``reply`` reads one answer."""

    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    sent: list[bytes] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, data: bytes) -> None:
        if self.writer is None:
            await self.connect()
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 5.0) -> Reply:
        """The next answer, framed by llhttp (a 100 Continue counts as an answer here)."""
        assert self.reader is not None
        async with asyncio.timeout(timeout):
            while not self.replies:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the peer before an answer")
                self.parser.feed_data(data)
        return self.replies.pop(0)

    # llhttp's callbacks
    def on_message_begin(self) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # llhttp reads the final answer after it as another message
            self.replies.append(Reply(status, self._headers, b""))

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.replies.append(Reply(status, self._headers, b"".join(self._body)))

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the peer closes (or resets) the connection with nothing more to say."""
        assert self.reader is not None
        try:
            async with asyncio.timeout(timeout):
                return not self.replies and await self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        lines = [f"{method} {path} HTTP/1.1", "Host: bidder"]
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.reply()

    async def bid(self, req: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
        return await self.request("POST", "/openrtb2/bid", json.dumps(req).encode(), headers)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
            self.writer = None


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample == name and got == want:
            return float(value)
    return 0.0


def run_uv(coro: Any) -> Any:
    """Run a test's coroutine on uvloop, the loop the bidder runs on in production."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class BidderProcess:
    """``python -m bidder`` as a separate OS process (the supervisor when processes > 1)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        import os
        import subprocess
        import sys

        from fleet.pg import free_port

        self.port = free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
        full.update(
            {
                "RTBFLEET_BIDDER_PORT": str(self.port),
                "RTBFLEET_SIGNING_KEY": SIGNING_KEY,
                "RTBFLEET_MEMCACHED": "",
                "RTBFLEET_BIDDER_PUBLISH_EVENTS": "0",
                "RTBFLEET_BIDDER_DRAIN_TIMEOUT": "1",
                "RTBFLEET_BIDDER_SHED": "0",
                "RTBFLEET_BIDDER_PACING": "0",  # no pacer here: the recorded-spend gate alone
                "PYTHONUNBUFFERED": "1",
            }
        )
        full.update(env)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bidder"],
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        import http.client
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"bidder not ready after {timeout}s:\n{self.log()}")

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a new connection (so that SO_REUSEPORT spreads them)."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=5)
    try:
        conn.request("POST", u.path or "/", body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def bus_env(bus: tuple[str, str]) -> dict[str, str]:
    """Settings that put a bidder (and its cache) on the coherence bus ``bus`` = (in, out)."""
    return {
        "RTBFLEET_COHERENCE_BUS_IN": bus[0],
        "RTBFLEET_COHERENCE_BUS_OUT": bus[1],
        "RTBFLEET_CACHE_BUS": "1",
    }


@contextlib.asynccontextmanager
async def config_watcher(settings: BidderSettings) -> AsyncIterator[None]:
    """The cache's config watcher (``cache.run_watcher``) for the Postgres and coherence bus of
    ``settings``, running until the block ends; entered once it leads."""
    from cache import run_watcher

    stop = asyncio.Event()
    leading = asyncio.Event()

    def on_leader(lead: bool) -> None:
        if lead:
            leading.set()

    task = asyncio.get_running_loop().create_task(
        run_watcher(settings.cache, stop=stop, on_leader=on_leader, origin="itest-watcher")
    )
    try:
        async with asyncio.timeout(10):
            await leading.wait()
        yield
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
