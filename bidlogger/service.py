"""The bid logger process: bus in, batches to the spool, the spool to Postgres, files to the store.

Tasks, each owned here and cancelled on ``close()``:

- *consume*: the subscriber's deliveries into the aggregator (positions and losses first);
- *flush*: every ``flush_interval`` one batch: spooled on disk, raw rows appended to their
  hourly segments, the state file written; due segments closed into Parquet files (a flush
  the consume task starts every ``RAW_FLUSH_ROWS`` raw rows leaves its segment step to a
  *segments* task of its own, in flush order);
- *drain*: spooled batches to Postgres through the writer process, oldest first, several in
  flight, each committed after the one before, retried while Postgres is down
  (``bidlogger.drain``, ``bidlogger.writer``);
- *uploader*: outbox files to the object store, retried while it is down;
- *maintenance*: roll-ups, retention and the creative feed, when this logger leads.

A restart loses at most what was received since the last flush (plus what was published while
the logger was down); the positions in the state file let the restarted logger count exactly
how much, and record it in ``bidlogger_losses``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bidlogger.aggregate import Aggregator, Batch, BidJoin
from bidlogger.drain import Drain
from bidlogger.errors import BidloggerError, ObjectStoreError, SpoolError, StoreError
from bidlogger.maintenance import Maintenance, Retention
from bidlogger.metrics import BidloggerMetrics, Snapshot
from bidlogger.objectstore import ObjectStore, open_object_store
from bidlogger.parquet import Segments, outbox_files
from bidlogger.partitions import prefixes, topic_partition, topic_type
from bidlogger.positions import Loss, Positions
from bidlogger.raw import RawChunk
from bidlogger.settings import BidloggerSettings
from bidlogger.spool import Spool, State
from bidlogger.writer import Writer
from fleet.aio import cancel_and_wait
from fleet.bus import Delivery, Subscriber
from fleet.service import settle_heap

log = logging.getLogger("bidlogger")

RAW_FLUSH_ROWS = 10_000  # raw rows that make a flush before the interval is up
SEGMENT_BACKLOG = 4  # raw flushes whose rows may wait for their segment step at once
JOIN_GRACE = 1e9  # the logger counts what it missed itself, from its saved positions


def tune_gc(young: int) -> None:
    """Fewer cyclic collections in this process (``young``: 0 leaves them as they are).

    Folding allocates a container per decoded event and frees it by reference counting soon
    after; cycles are rare. With Python's default the collector ran some 300 times in the
    benchmark's raw run, and scanned the whole heap a few times, about a tenth of the process's
    CPU. What exists at start (modules, settings) is frozen out of the scans; the young
    generation is collected every ``young`` allocations instead of 700."""
    if young > 0:
        settle_heap(young)


class BidLogger:
    """See the module doc. ``start()``, then ``close()`` (idempotent) or ``terminate()``."""

    def __init__(
        self,
        settings: BidloggerSettings,
        dsn: str,
        *,
        registry: CollectorRegistry | None = None,
        object_store: ObjectStore | None = None,
        publish_feed: Callable[[dict[int, tuple[int, int, bool]], float], Any] | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.logger_id = settings.effective_logger_id
        self.state_dir = settings.effective_state_dir
        self.wall = wall
        self.mono = mono
        self.store = Writer(
            dsn, log_level=settings.fleet.log_level, log_json=settings.fleet.log_json
        )
        self.spool = Spool(self.state_dir / "spool", settings.spool_max_bytes)
        self.segments = Segments(
            self.state_dir / "segments",
            self.state_dir / "outbox",
            logger_id=self.logger_id,
            max_rows=settings.parquet_max_rows,
            max_seconds=settings.parquet_max_seconds,
        )
        self.object_store = object_store or open_object_store(
            settings.object_store,
            settings.fleet.data_dir / "objects",
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
        )
        self.maintenance = Maintenance(
            dsn,
            lock_key=settings.leader_lock_key,
            retention=Retention(settings.raw_days, settings.hourly_days, settings.daily_days),
            feed_days=settings.feed_window_days,
        )
        self.publish_feed = publish_feed
        held = settings.held
        self.aggregator = Aggregator(
            logger_id=self.logger_id,
            shard=settings.shard,
            partitions_covered=len(held),
            partitions_total=settings.total_partitions,
            join=BidJoin(settings.join_ttl, settings.join_max_entries),
            raw_partitions=settings.raw_held,
            raw_types=frozenset(settings.raw_types),
        )
        self.subscriber = Subscriber(
            settings.fleet.event_bus_out,
            prefixes=prefixes(held, settings.event_types),
            heartbeat_timeout=settings.heartbeat_timeout,
            registry=registry,
            join_grace=JOIN_GRACE,
        )
        self.metrics = BidloggerMetrics(registry, self.snapshot)
        self.drain = Drain(
            self.spool,
            self.store,
            mono=mono,
            observe=self.metrics.flush_seconds.observe,
            drop=self.aggregator.drop,
        )
        self.next_seq = 1
        self.gaps: dict[str, int] = {}
        self.missed: dict[tuple[str, str], int] = {}
        self.uploads = {"ok": 0, "failed": 0}
        self.raw_events = 0
        self.outbox_count = 0
        self.last_maintenance: Any = None
        self._outbox = asyncio.Event()
        self._consuming = asyncio.Event()
        self._flush_soon = asyncio.Event()
        self._raw_flush: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._segments_lock = asyncio.Lock()  # appends and closes, in flush order (FIFO)
        self._segment_steps: set[asyncio.Task[None]] = set()  # of raw flushes, trailing
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, *, consume: bool = True) -> None:
        """Restore the state, subscribe, start the tasks. ``consume=False`` subscribes but leaves
        deliveries queued in the socket until :meth:`consume` (the benchmark times the logger
        alone that way)."""
        self.store.start()
        await self._restore()
        made = await asyncio.to_thread(self.segments.recover)
        if made:
            log.info("closed %d raw segment(s) left by the previous run", len(made))
        self.outbox_count = len(outbox_files(self.segments.outbox))
        await self.subscriber.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._consume(), name="bidlogger-consume"))
        if consume:
            self.consume()
        for name, job in (
            ("flush", self._flush_loop),
            ("drain", self.drain.run),
            ("uploader", self._uploader),
            ("maintenance", self._maintenance_loop),
        ):
            self._tasks.append(loop.create_task(job(), name=f"bidlogger-{name}"))
        log.info(
            "bid logger %s: partitions %s, raw sample %d partition(s), %d batch(es) spooled",
            self.logger_id,
            self.settings.shard,
            len(self.settings.raw_held),
            len(self.spool),
        )

    async def _restore(self) -> None:
        """The flush sequence and the positions of the last spooled batch: from the state
        file, else (a fresh disk) from Postgres."""
        state = self.spool.load_state()
        positions = list(state.positions) if state is not None else []
        next_seq = max(state.next_seq if state else 1, self.spool.last_seq + 1)
        if state is None:
            try:
                next_seq = max(next_seq, await self.store.last_seq(self.logger_id) + 1)
                positions = await self.store.positions(self.logger_id)
            except StoreError as exc:
                log.warning("no saved state and Postgres unavailable (%s): starting afresh", exc)
        self.next_seq = next_seq
        self.aggregator.positions = Positions(
            persisted={(p.publisher_id, p.topic): p for p in positions}
        )

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop listening, flush what was received, give Postgres and the store a moment."""
        if self._closed:
            return
        self._closed = True
        await self.subscriber.close()
        consume = self._tasks[0] if self._tasks else None
        await cancel_and_wait(consume)  # its deliveries so far are all folded in
        if self._raw_flush is not None:  # finished, not cut short: its batch is cut already
            await self._raw_flush
        with contextlib.suppress(BidloggerError):
            await self.flush(close_segments=True)
        # what Postgres and the store do not take within the timeout waits on disk for the next
        # start (the spool and the outbox are read again then)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                while len(self.spool) or self.outbox_count:
                    self._outbox.set()
                    await asyncio.sleep(0.05)
        for task in self._tasks[1:]:
            await cancel_and_wait(task)
        await self.store.close()
        await self.maintenance.close()

    async def terminate(self) -> None:
        """Stop now: nothing more is flushed (what was spooled stays for the next start)."""
        self._closed = True
        for task in [*self._tasks, self._raw_flush, *self._segment_steps]:
            await cancel_and_wait(task)
        await self.subscriber.close()
        self.store.terminate()
        await self.maintenance.close()

    # -- consume ------------------------------------------------------------------------------
    def consume(self) -> None:
        """Let the consume task read deliveries (see ``start(consume=False)``)."""
        self._consuming.set()

    async def _consume(self) -> None:
        await self._consuming.wait()
        agg = self.aggregator
        observe = agg.positions.observe  # set by _restore() before this task starts
        topics: dict[str, tuple[int, str]] = {}
        async for d in self.subscriber:
            if d.kind != "data":
                self._notice(d)
                continue
            observe(d.publisher_id, d.topic, d.incarnation, d.seq, d.total, len(d.payloads))
            where = topics.get(d.topic)
            if where is None:
                where = topics[d.topic] = (topic_partition(d.topic), topic_type(d.topic))
            try:
                agg.add(d.topic, where[0], where[1], d.payloads)
            except Exception:  # a bug must not stop the logger: count the batch, say so
                agg.drop("internal", len(d.payloads))
                log.exception("a batch of %d event(s) on %s not counted", len(d.payloads), d.topic)
            flushing = self._raw_flush
            if flushing is not None and not flushing.done():
                # a turn of the loop per delivery while a raw flush is under way: each of its
                # worker-thread steps goes on as it finishes, not a burst of reading later (the
                # subscriber yields only every few thousand events), and batches stay small
                await asyncio.sleep(0)
            elif agg.raw_rows >= RAW_FLUSH_ROWS:  # smaller COPYs, overlapping the reading
                self._raw_flush = asyncio.get_running_loop().create_task(
                    self._flush_logged(trailing=True), name="bidlogger-raw-flush"
                )
                await asyncio.sleep(0)  # it starts now: it cuts the batch at this size

    def _notice(self, d: Delivery) -> None:
        if d.kind == "gap":
            self.gaps[d.publisher_id] = self.gaps.get(d.publisher_id, 0) + 1
        elif d.kind == "silent":
            log.warning("publisher %s is silent", d.publisher_id)

    # -- flush --------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        interval = self.settings.flush_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_soon.wait(), interval)
            self._flush_soon.clear()
            await self._flush_logged()

    async def _flush_logged(self, *, trailing: bool = False) -> None:
        try:
            await self.flush(trailing=trailing)
        except SpoolError:
            log.exception("flush failed: the local disk refused")
        except Exception:  # the next flush tries again; the loop must outlive a bug
            log.exception("flush failed")

    async def flush(self, *, close_segments: bool = False, trailing: bool = False) -> Batch | None:
        """One batch now (None when nothing happened since the last).

        The batch is spooled (and handed to the writer) first; its raw rows then go to their
        segments, and due segments become Parquet files, outside the flush lock, so that the
        next flush, the writer's COPY and the Parquet conversion overlap. ``trailing``: return
        once the batch is spooled, the segment step following in a task of its own (in flush
        order, at most ``SEGMENT_BACKLOG`` behind), so that the consume task cuts the next
        batch, and Postgres gets it, without waiting for Arrow.
        """
        async with self._flush_lock:
            agg = self.aggregator
            if not (agg.cells or agg.raw or agg.positions.dirty or agg.positions.losses):
                batch = None
            else:
                batch = agg.flush(self.next_seq)
                self.next_seq += 1
                self._note_losses(batch)
                state = State(self.next_seq, agg.positions.snapshot())
                spooled = await asyncio.to_thread(self._persist, batch, state)
                if spooled:
                    self.drain.spooled(batch.seq)
                else:
                    self._refused(batch)
                self.raw_events += batch.raw_count
        chunks = batch.chunks if batch is not None else []
        if trailing and not close_segments:
            step = asyncio.get_running_loop().create_task(
                self._segments_logged(chunks), name="bidlogger-segments"
            )
            self._segment_steps.add(step)
            step.add_done_callback(self._segment_steps.discard)
            while len(self._segment_steps) > SEGMENT_BACKLOG:
                await asyncio.wait(self._segment_steps, return_when=asyncio.FIRST_COMPLETED)
            return batch
        async with self._segments_lock:  # after the trailing steps before it
            await self._close_segments(chunks, everything=close_segments)
        return batch

    async def _segments_logged(self, chunks: list[RawChunk]) -> None:
        try:
            async with self._segments_lock:
                await self._close_segments(chunks, everything=False)
        except SpoolError:
            log.exception("raw rows not appended to their segments: the local disk refused")
        except Exception:
            log.exception("raw rows not appended to their segments")

    def _note_losses(self, batch: Batch) -> None:
        for loss in batch.losses:
            key = (loss.publisher_id, loss.cause)
            self.missed[key] = self.missed.get(key, 0) + loss.events
            if loss.cause != "spool_full":
                log.warning(
                    "%d event(s) missed (%s) from %s on %s",
                    loss.events,
                    loss.cause,
                    loss.publisher_id,
                    loss.topic,
                )

    def _persist(self, batch: Batch, state: State) -> bool:
        """In a worker thread: the batch to the spool, then the state file."""
        spooled = self.spool.put(batch)
        self.spool.save_state(state)
        return spooled

    def _refused(self, batch: Batch) -> None:
        """No room in the spool: the batch's events are lost, and said so in the next one."""
        agg = self.aggregator
        dropped = agg.dropped
        dropped["spool_full"] = dropped.get("spool_full", 0) + batch.events
        agg.positions.losses.extend(batch.losses)
        agg.positions.losses.append(Loss("spool_full", "", "", batch.events))
        agg.positions.dirty.update((p.publisher_id, p.topic) for p in batch.positions)
        log.error("spool full (%d bytes): batch %d dropped", self.spool.bytes, batch.seq)

    async def _close_segments(self, chunks: list[RawChunk], *, everything: bool) -> None:
        """Append ``chunks`` to their segments, then close the due ones: one worker-thread
        step."""
        made = await asyncio.to_thread(
            self._segments_step, chunks, self.mono(), self.aggregator.watermark, everything
        )
        if made:
            self.outbox_count += len(made)
            self._outbox.set()

    def _segments_step(
        self, chunks: list[RawChunk], now: float, watermark: float, everything: bool
    ) -> list[Path]:
        if chunks:
            self.segments.append(chunks, now)
        return self.segments.close_due(now, watermark, everything=everything)

    # -- the drain ----------------------------------------------------------------------------
    @property
    def batches(self) -> dict[str, int]:
        return self.drain.batches

    @property
    def postgres_up(self) -> bool:
        return self.drain.postgres_up

    async def wait_written(self, timeout: float) -> bool:
        """True once the spool is empty (every batch so far is in Postgres)."""
        return await self.drain.wait_written(timeout)

    # -- uploader -----------------------------------------------------------------------------
    async def _uploader(self) -> None:
        outbox = self.segments.outbox
        while True:
            self._outbox.clear()  # before the scan: a file closed during it wakes us again
            files = await asyncio.to_thread(outbox_files, outbox)
            self.outbox_count = len(files)
            if not files:
                await self._outbox.wait()
                continue
            for path in files:
                key = path.relative_to(outbox).as_posix()
                try:
                    await self.object_store.put(key, path)
                except ObjectStoreError as exc:
                    self.uploads["failed"] += 1
                    log.warning("upload failed, %d file(s) wait on disk: %s", len(files), exc)
                    await asyncio.sleep(self.settings.upload_retry)
                    break
                self.uploads["ok"] += 1
                path.unlink()
                self.outbox_count -= 1

    # -- maintenance --------------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        interval = self.settings.maintenance_interval
        while True:
            await self.maintain()
            await asyncio.sleep(interval)

    async def maintain(self) -> bool:
        """One maintenance pass when this logger leads; True when it ran."""
        try:
            result = await self.maintenance.run()
        except StoreError as exc:
            log.warning("%s", exc)
            return False
        if result is None:
            return False
        report, feed = result
        self.last_maintenance = report
        if self.publish_feed is not None and report.event_time:
            try:
                await self.publish_feed(feed, report.event_time)
            except Exception:
                log.exception("the creative feed was not published")
        return True

    # -- metrics ------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        agg = self.aggregator
        watermark = agg.watermark
        return Snapshot(
            events=dict(agg.events_in),
            dropped=dict(agg.dropped),
            missed=dict(self.missed),
            gaps=dict(self.gaps),
            batches=dict(self.batches),
            spool_batches=len(self.spool),
            spool_bytes=self.spool.bytes,
            spool_age=self.drain.oldest_age(),
            lag=max(0.0, self.wall() - watermark) if watermark else 0.0,
            outbox_files=self.outbox_count,
            uploads=dict(self.uploads),
            raw_events=self.raw_events,
            join_bids=len(agg.join),
            join_evicted={"size": agg.join.evicted, "ttl": agg.join.expired},
            leader=self.maintenance.leading,
            postgres_up=self.postgres_up,
        )

    def health(self) -> dict[str, Any]:
        s = self.snapshot()
        return {
            "logger_id": self.logger_id,
            "shard": self.settings.shard,
            "postgres_up": s.postgres_up,
            "spool_batches": s.spool_batches,
            "spool_bytes": s.spool_bytes,
            "outbox_files": s.outbox_files,
            "lag_seconds": round(s.lag, 3),
            "leader": s.leader,
            "next_seq": self.next_seq,
        }
