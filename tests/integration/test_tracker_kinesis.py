"""The Kinesis sink against moto in server mode (a real HTTP server on loopback, boto3 pointed
at it): partial put_records failures retried until every record is there, and Kinesis down then
up with every record delivered from the spool, in order."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import msgspec
import pytest
from conftest_tracker import NOW, SECRET, notice_query, seed, tracker_world
from prometheus_client import CollectorRegistry

from fleet import signing
from fleet.processes import free_port, wait_for_port
from tracker.kinesis import Backoff, KinesisSink, boto3_client
from tracker.metrics import TrackerMetrics
from tracker.notices import Streams

pytestmark = pytest.mark.integration
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
FAST = Backoff(base=0.02, maximum=0.2)


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@contextlib.contextmanager
def moto_server(port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for_port("127.0.0.1", port, 60):
            raise RuntimeError("moto did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kinesis(endpoint: str) -> Any:
    return boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION)


def create_streams(endpoint: str, *names: str, shards: int = 1) -> None:
    client = kinesis(endpoint)
    for name in names:
        client.create_stream(StreamName=name, ShardCount=shards)
        client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})


def read_stream(endpoint: str, name: str) -> list[tuple[str, bytes]]:
    """(partition key, data) of every record, shard by shard, in order."""
    client = kinesis(endpoint)
    out = []
    for shard in client.list_shards(StreamName=name)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            out += [(r["PartitionKey"], r["Data"]) for r in page["Records"]]
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return out


class FaultProxy:
    """A real HTTP proxy on loopback between boto3 and moto. On PutRecords it takes out the
    records ``fail(data)`` picks, forwards the rest, and answers those as throttled in their
    places, as Kinesis does on a partial failure."""

    def __init__(self, upstream_port: int, fail: Callable[[bytes], bool]) -> None:
        self.fail = fail
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                target = self.headers.get("X-Amz-Target", "")
                dropped: list[int] = []
                if target.endswith(".PutRecords"):
                    doc = json.loads(body)
                    kept = []
                    for i, record in enumerate(doc["Records"]):
                        if proxy.fail(base64.b64decode(record["Data"])):
                            dropped.append(i)
                        else:
                            kept.append(record)
                    doc["Records"] = kept
                    body = json.dumps(doc).encode()
                headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                conn.request("POST", self.path, body, {**headers, "Content-Length": str(len(body))})
                upstream = conn.getresponse()
                answer = upstream.read()
                if dropped and upstream.status == 200:
                    doc = json.loads(answer)
                    results = doc["Records"]
                    for i in dropped:
                        results.insert(
                            i,
                            {
                                "ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard",
                            },
                        )
                    doc["FailedRecordCount"] = doc.get("FailedRecordCount", 0) + len(dropped)
                    proxy.failed += len(dropped)
                    answer = json.dumps(doc).encode()
                self.send_response(upstream.status)
                for name, value in upstream.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                conn.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_delivered(sink: KinesisSink, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while sink.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.pending == 0, f"{sink.pending} record(s) not delivered"


def records(n: int, prefix: str = "r") -> list[tuple[str, bytes]]:
    return [(f"u{i % 7}", f"{prefix}-{i:05d}".encode()) for i in range(n)]


def test_partial_failures_are_retried_until_every_record_is_there(tmp_path: Path) -> None:
    port = free_port()
    with moto_server(port) as endpoint:
        create_streams(endpoint, "attributed", "organic", shards=2)
        seen: set[bytes] = set()
        lock = threading.Lock()

        def fail(data: bytes) -> bool:  # a third of the records fail on their first attempt
            with lock:
                first = data not in seen
                seen.add(data)
            return first and int(data.split(b"-")[1]) % 3 == 0

        proxy = FaultProxy(port, fail)
        registry = CollectorRegistry()
        metrics = TrackerMetrics(registry)
        sink = KinesisSink(
            lambda: boto3_client(f"http://127.0.0.1:{proxy.port}", REGION),
            tmp_path / "spool",
            metrics,
            backoff=FAST,
            seed=1,
        )
        sink.start()
        try:
            sent = records(1200)
            for key, data in sent:
                assert sink.put("attributed", key, data)
            for key, data in records(30, "o"):
                assert sink.put("organic", key, data)
            wait_delivered(sink)
        finally:
            sink.close()
            proxy.close()
        got = read_stream(endpoint, "attributed")
        assert sorted(got) == sorted(sent)  # every record, exactly once
        assert len(read_stream(endpoint, "organic")) == 30
        assert proxy.failed == 400 + 10  # a third of 1200 and of 30
        assert registry.get_sample_value("tracker_kinesis_retries_total") == 410
        partial = registry.get_sample_value(
            "tracker_kinesis_batches_total", {"stream": "attributed", "outcome": "partial"}
        )
        assert partial is not None and partial >= 3  # 1200 records: at least 3 calls of 500


def test_kinesis_down_then_up_every_record_delivered_in_order(tmp_path: Path) -> None:
    port = free_port()
    registry = CollectorRegistry()
    metrics = TrackerMetrics(registry)
    spool = tmp_path / "spool"
    sink = KinesisSink(
        lambda: boto3_client(f"http://127.0.0.1:{port}", REGION), spool, metrics, backoff=FAST
    )
    sink.start()
    sent = records(300)
    try:
        for key, data in sent[:200]:
            assert sink.put("attributed", key, data)

        def failed() -> float:
            value = registry.get_sample_value(
                "tracker_kinesis_batches_total", {"stream": "attributed", "outcome": "failed"}
            )
            return value or 0.0

        deadline = time.monotonic() + 20
        while (sink.spool.records < 200 or failed() < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.spool.records == 200  # waiting on disk
        assert registry.get_sample_value("tracker_kinesis_spool_records") == 200
        assert failed() >= 1  # it tried, and could not reach Kinesis
        sink.close()  # the process stops while Kinesis is down: the spool stays on disk
        sink = KinesisSink(
            lambda: boto3_client(f"http://127.0.0.1:{port}", REGION), spool, metrics, backoff=FAST
        )
        assert sink.pending == 200
        sink.start()
        for key, data in sent[200:]:
            assert sink.put("attributed", key, data)
        with moto_server(port) as endpoint:
            create_streams(endpoint, "attributed", "organic")
            wait_delivered(sink)
            assert read_stream(endpoint, "attributed") == sent  # one shard: in order
        assert registry.get_sample_value("tracker_kinesis_spool_records") == 0
    finally:
        sink.close()


async def test_postbacks_reach_their_stream_keyed_by_device(tmp_path: Path, pg_dsn: str) -> None:
    await seed(pg_dsn)
    port = free_port()
    with moto_server(port) as endpoint:
        await asyncio.to_thread(create_streams, endpoint, "attributed", "organic")
        sink = KinesisSink(
            lambda: boto3_client(endpoint, REGION),
            tmp_path / "spool",
            TrackerMetrics(CollectorRegistry()),
            backoff=FAST,
        )
        sink.start()
        device = signing.user_key("ifa-1", SECRET)
        try:
            async with tracker_world(
                pg_dsn, kinesis=sink, streams=Streams("attributed", "organic")
            ) as w:
                click = notice_query("click", "k1:1:b0", price=None, user_key=device)
                assert (await w.get("/click", click)).status == 302
                for ifa in ("ifa-1", "ifa-2"):
                    query = urlencode({"partner": "p", "event": "install", "ifa": ifa})
                    assert (await w.get("/postback", query, now=NOW + 60)).status == 200
            await asyncio.to_thread(wait_delivered, sink)
        finally:
            await asyncio.to_thread(sink.close)
        attributed = await asyncio.to_thread(read_stream, endpoint, "attributed")
        organic = await asyncio.to_thread(read_stream, endpoint, "organic")
    assert [key for key, _ in attributed] == [device]
    assert [key for key, _ in organic] == [signing.user_key("ifa-2", SECRET)]
    record = msgspec.json.decode(attributed[0][1])
    assert (record["type"], record["txid"], record["attributed"]) == ("install", "k1:1:b0", True)
    assert record["id"] == f"install|{device}|adv:1"
    assert "ifa-1" not in attributed[0][1].decode()
