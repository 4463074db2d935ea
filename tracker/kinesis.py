"""Kinesis (boto3): attributed conversions to one stream, organic ones to another.

``KinesisSink.put()`` is called on the event loop and never blocks: it hands the record to the
sender thread, which writes it to the on-disk ``Spool`` first and sends from the spool, in
order. ``put_records`` takes at most 500 records and 5 MiB per call, and only consecutive
records of the same stream; the device (user key) is the partition key. When some records of a
call fail (throughput exceeded, say), only those are sent again, with exponential back-off,
before anything newer; when Kinesis cannot be reached at all, records wait in the spool (bounded:
past ``max_bytes`` new records are dropped and counted) and go out when it is back.

Delivery is at-least-once: a record whose delivery was not recorded before a crash is sent
again. Within a call, a record retried after a partial failure can land after the records that
followed it (Kinesis orders by shard; consumers deduplicate on the record's ``id``, the key it
was counted once under).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from tracker.errors import KinesisError
from tracker.metrics import TrackerMetrics
from tracker.spool import Spool

log = logging.getLogger("tracker.kinesis")

MAX_RECORDS: Final = 500
MAX_CALL_BYTES: Final = 5 * 1024 * 1024
MAX_RECORD_BYTES: Final = 1024 * 1024  # data and partition key of one record


class SpooledRecord(msgspec.Struct, array_like=True, frozen=True):
    stream: str
    partition_key: str
    data: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpooledRecord)


def chunk(records: list[SpooledRecord]) -> list[SpooledRecord]:
    """The head of ``records`` that one put_records call takes: same stream, at most 500
    records and 5 MiB."""
    if not records:
        return []
    stream = records[0].stream
    taken: list[SpooledRecord] = []
    size = 0
    for record in records:
        weight = len(record.data) + len(record.partition_key.encode())
        if record.stream != stream or len(taken) >= MAX_RECORDS:
            break
        if taken and size + weight > MAX_CALL_BYTES:
            break
        taken.append(record)
        size += weight
    return taken


@dataclass(frozen=True)
class Backoff:
    base: float = 0.1
    maximum: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(maximum, base x 2^attempt)]."""
        return rng.uniform(0, min(self.maximum, self.base * (2 ** min(attempt, 30))))


def boto3_client(endpoint: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=2,
        read_timeout=10,
        max_pool_connections=2,
    )
    return boto3.client("kinesis", endpoint_url=endpoint or None, region_name=region, config=config)


class KinesisSink:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        spool_dir: Path,
        metrics: TrackerMetrics,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_queue: int = 100_000,
        backoff: Backoff = Backoff(),
        seed: int | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.metrics = metrics
        self.max_queue = max_queue
        self.backoff = backoff
        self.spool = Spool(spool_dir, max_bytes)
        self._rng = random.Random(seed)
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sync_gauges()

    # -- the event loop's side -------------------------------------------------------------

    def put(self, stream: str, partition_key: str, data: bytes) -> bool:
        """Queue one record for ``stream``; False (counted) when it is too large or the queue
        is full."""
        if len(data) + len(partition_key.encode()) > MAX_RECORD_BYTES or not partition_key:
            self.metrics.kinesis_dropped.inc()
            return False
        with self._wake:
            if len(self._queue) >= self.max_queue:
                self.metrics.kinesis_dropped.inc()
                return False
            self._queue.append(_encoder.encode(SpooledRecord(stream, partition_key[:256], data)))
            self._wake.notify()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracker-kinesis", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop sending; what was queued is in the spool when this returns."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._spool_queue()

    @property
    def pending(self) -> int:
        """Records not yet delivered (queued or spooled)."""
        return len(self._queue) + self.spool.records

    # -- the sender thread -----------------------------------------------------------------

    def _sync_gauges(self) -> None:
        self.metrics.spool_records.set(self.spool.records)
        self.metrics.spool_bytes.set(self.spool.bytes)

    def _spool_queue(self) -> None:
        with self._wake:
            queued = list(self._queue)
            self._queue.clear()
        if queued:
            accepted = self.spool.append(queued)
            if accepted < len(queued):
                self.metrics.kinesis_dropped.inc(len(queued) - accepted)
                log.warning("spool full: %d record(s) dropped", len(queued) - accepted)
            self._sync_gauges()

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (spooling what arrives); False when asked to stop."""
        with self._wake:
            if not self._stopping:
                self._wake.wait(seconds)
            return not self._stopping

    def _run(self) -> None:
        client = None
        attempt = 0
        while True:
            self._spool_queue()
            with self._wake:
                if self._stopping:
                    return
            batch = chunk([_decoder.decode(r) for r in self.spool.peek(MAX_RECORDS)])
            if not batch:
                with self._wake:
                    if not self._queue and not self._stopping:
                        self._wake.wait(1.0)
                continue
            try:
                if client is None:
                    client = self.client_factory()
                self._deliver(client, batch)
            except KinesisStopped:
                return
            except Exception as exc:  # unreachable, throttled as a whole, credentials: wait
                self.metrics.kinesis_batches.labels(batch[0].stream, "failed").inc()
                delay = self.backoff.delay(attempt, self._rng)
                attempt += 1
                log.warning("Kinesis put_records failed (%s); again in %.2f s", exc, delay)
                if not self._sleep(delay):
                    return
                continue
            attempt = 0
            self.spool.commit(len(batch))
            self._sync_gauges()

    def _deliver(self, client: Any, batch: list[SpooledRecord]) -> None:
        """Send ``batch`` until every record is accepted: only the failed ones again."""
        stream = batch[0].stream
        remaining = batch
        attempt = 0
        while remaining:
            response = client.put_records(
                StreamName=stream,
                Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in remaining],
            )
            results = response.get("Records", [])
            if len(results) != len(remaining):
                raise KinesisError("put_records answered a different number of records")
            failed = [r for r, res in zip(remaining, results, strict=True) if res.get("ErrorCode")]
            delivered = len(remaining) - len(failed)
            self.metrics.kinesis_records.labels(stream).inc(delivered)
            self.metrics.kinesis_batches.labels(stream, "partial" if failed else "ok").inc()
            if failed:
                self.metrics.kinesis_retries.inc(len(failed))
                if not self._sleep(self.backoff.delay(attempt, self._rng)):
                    raise KinesisStopped
                attempt += 1
            remaining = failed


class KinesisStopped(Exception):
    """The sink was closed while records were still being retried (they stay in the spool)."""
