"""The learner service: events from the bus into the online learner, models out to Postgres and
the coherence bus, checkpoints on a volume.

One asyncio loop receives the event bus (the partitions of this learner's share, the event types
the joiner reads) into a bounded buffer; every ``flush_interval_s`` one worker thread takes the
buffer, feeds the learner and trains (the Cython loops release the GIL, the loop keeps
receiving). Everything that touches the learner's state runs on that one thread, in order:
rounds, exports, checkpoints. A full buffer drops events and counts them (the bus is best
effort; a lost event is an unjoined example, never a wrong one).

Export: every ``export_interval_s`` the chosen estimators and the market table become a
version-2 model (``fleet.model``), stored in the ``models`` table with the next version and
announced by invalidating ``model``/``latest`` (``cache.models``) over the coherence bus.
Checkpoint: every ``checkpoint_interval_s`` and at a clean stop, written atomically; a learner
that starts with one resumes from it (one that cannot be read is set aside, and learning starts
afresh, with one log line).

Learners that split the partitions (``relay_bind`` set; docs/learner.md, "Learners that split
the partitions"): each joins its share; the one holding the fleet's lock leads: it learns its
own examples and those the others send (``learner.relay``), exports the one model, and stores
its training state in Postgres with each checkpoint (``learner.store``). The others follow:
they send what their joins settle to the leader whose address the ``learner_leader`` row gives,
and take the lock when it passes on, resuming training from the stored state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import asyncpg
import msgspec
import numpy as np
import zmq
from prometheus_client import CollectorRegistry, Counter

from cache import Cache, default_origin
from cache.models import LATEST_KEY, MODEL_NAMESPACE, model_namespace
from fleet.aio import cancel_and_wait
from fleet.bus.subscriber import Subscriber
from fleet.db.model_store import latest_version, save_model
from fleet.errors import BusError
from fleet.events import AnyEvent, decode, partition_prefix
from fleet.model import SparseModel, encode_sparse
from learner.checkpoint import (
    checkpoint_bytes,
    checkpoint_from_bytes,
    load_checkpoint,
    save_checkpoint,
)
from learner.errors import AnotherLearner, CheckpointError
from learner.join import Example, PriceObservation
from learner.metrics import LearnerMetrics
from learner.online import OnlineLearner
from learner.relay import RelayReceiver, RelaySender, Sequences, learn_parcels
from learner.settings import LearnerSettings
from learner.store import advertise, current_leader, load_state, save_state

log = logging.getLogger("learner.service")

# The events the joiner reads (bids, their outcome and labels); the rest are not subscribed.
LEARNT_TYPES: Final = ("bid", "win", "loss", "impression", "click", "install")
MAX_BUFFERED: Final = 200_000  # events waiting for the next round at most
MAX_PARCELS: Final = 2_000  # parcels from the other learners waiting for the next round
RELAY_LINGER_MS: Final = 2_000  # a follower's clean stop: its last parcels may still go out
JOIN_GRACE: Final = 1.0
PG_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def topic_prefixes(partitions: list[int]) -> list[str]:
    return [partition_prefix(p) + t for p in partitions for t in LEARNT_TYPES]


class LearnerService:
    """``await start()``; ``await stop()`` exports and checkpoints once more, then closes."""

    def __init__(
        self,
        settings: LearnerSettings,
        dsn: str,
        *,
        registry: CollectorRegistry | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """``rng``: the bootstrap resamples of the estimator selection."""
        self.settings = settings
        self.dsn = dsn
        self.registry = registry or CollectorRegistry()
        self.metrics = LearnerMetrics(self.registry)
        self.dropped = Counter(
            "learner_dropped_events_total",
            "events dropped: buffer full, or not an event",
            ["reason"],
            registry=self.registry,
        )
        self.relay = Counter(
            "learner_relay_parcels_total",
            "parcels of joined examples between learners that split the partitions: sent, "
            "dropped (queue full, no leader), received, lost (a gap in a sender's numbers), "
            "repeated, malformed",
            ["outcome"],
            registry=self.registry,
        )
        self.config = settings.to_config()
        self.split = bool(settings.relay_bind)
        self.leading = False  # this process trains and exports (always, without a relay)
        self.epoch = 0  # of this process's leadership (split only)
        self.name = f"{socket.gethostname()}:{os.getpid()} {settings.share}"
        self._zmq: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sender: RelaySender | None = None
        self._receiver: RelayReceiver | None = None
        self._sequences = Sequences()
        self._parcels: list[bytes] = []
        self._relay_task: asyncio.Task[None] | None = None
        self.learner = OnlineLearner(self.config)
        self.resumed = False
        self.stream_time = 0.0  # the newest event time seen
        self.model_version = 0  # the last one this learner exported
        self.exports = 0
        self._buffer: list[AnyEvent] = []
        self._exported_learnt = 0  # examples learnt when the last model was exported
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="learner")
        self._pool: asyncpg.Pool | None = None
        self._lock_conn: asyncpg.Connection | None = None  # holds the one-learner lock
        self.cache: Cache | None = None
        self._subscriber: Subscriber | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._round_lock = asyncio.Lock()
        self._rng = rng if rng is not None else np.random.default_rng()

    # -- start / stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Raises AnotherLearner when this fleet's learner already runs (before touching the
        checkpoint), an OSError or asyncpg error when Postgres cannot be reached to tell."""
        s = self.settings
        if self.split:
            self._zmq = zmq.Context()
            self._sender = RelaySender(self._zmq, self.name)
            self._lock_conn = await asyncpg.connect(self.dsn)
            await self._run(self._resume)
            await self._look_at_leader()
        else:
            await self._take_lock()
            self.leading = True
            await self._run(self._resume)
        self._pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=2)
        self.cache = Cache(s.cache, registry=self.registry, origin=default_origin("learner"))
        self.cache.register(model_namespace(self._pool))
        await self.cache.start()
        self._subscriber = Subscriber(
            s.fleet.event_bus_out,
            prefixes=topic_prefixes(s.partitions()),
            heartbeat_timeout=s.heartbeat_timeout,
            registry=self.registry,
            join_grace=JOIN_GRACE,
        )
        await self._subscriber.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._receive(), name="learner-receive"),
            loop.create_task(self._every(s.flush_interval_s, self.round), name="learner-round"),
            loop.create_task(self._every(s.export_interval_s, self.export), name="learner-export"),
            loop.create_task(
                self._every(s.checkpoint_interval_s, self.checkpoint), name="learner-checkpoint"
            ),
        ]
        if self.split:
            self._tasks += [
                loop.create_task(
                    self._every(s.leader_poll_s, self._look_at_leader), name="learner-leader"
                ),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        if self._subscriber is not None:
            await self._subscriber.close()
            self._subscriber = None
        try:
            await self.round()
            await self.export()
            await self.checkpoint()
        finally:
            if self._sender is not None:
                self._sender.close(linger_ms=RELAY_LINGER_MS)
            if self._relay_task is not None:
                await cancel_and_wait(self._relay_task)
                self._relay_task = None
            if self._receiver is not None:
                self._receiver.close()
                self._receiver = None
            if self._zmq is not None:
                self._zmq.term()
                self._zmq = None
            if self.cache is not None:
                await self.cache.close()
                self.cache = None
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            if self._lock_conn is not None:
                await self._lock_conn.close()  # the session ends: the lock is released
                self._lock_conn = None
            self._worker.shutdown(wait=True)

    def health(self) -> dict[str, Any]:
        return {
            "resumed": self.resumed,
            "stream_time": self.stream_time,
            "learnt": dict(self.learner.learnt),
            "model_version": self.model_version,
            "exports": self.exports,
            "buffered": len(self._buffer),
            "role": "leader" if self.leading else "follower",
            "epoch": self.epoch,
            "relay_lost": self._sequences.lost,
        }

    # -- one learner per fleet -----------------------------------------------------------------

    async def _take_lock(self) -> None:
        """The session-level advisory lock of the fleet's learner, on a connection of its own
        held until stop (or until that session ends, which releases it)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            held = bool(
                await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.settings.lock_key)
            )
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            raise AnotherLearner(
                "another learner already runs for this fleet (advisory lock "
                f"{self.settings.lock_key:#x} is held): one learner per fleet, since learners "
                "that split the partitions would publish models that overwrite each other's"
            )
        self._lock_conn = conn

    async def _still_the_learner(self) -> bool:
        """Whether this process may publish: its lock session is alive, or it takes the lock
        again (a Postgres restart ends the session and releases it)."""
        conn = self._lock_conn
        if conn is not None and not conn.is_closed():
            try:
                await conn.fetchval("SELECT 1")
                return True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        self._lock_conn = None
        try:
            await self._take_lock()
        except AnotherLearner as exc:
            log.error("not exporting: %s", exc)
            return False
        return True

    # -- learners that split the partitions: the leader and the others ---------------------------

    async def _look_at_leader(self) -> None:
        """Lead when this session holds (or takes) the fleet's lock; otherwise follow the
        leader the ``learner_leader`` row names. Role changes wait for the round in progress."""
        conn = self._lock_conn
        if conn is None or conn.is_closed():
            conn = self._lock_conn = await asyncpg.connect(self.dsn)
        try:
            if self.leading:
                await conn.fetchval("SELECT 1")  # the session, and so the lock, is alive
                return
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.settings.lock_key):
                try:
                    async with self._round_lock:
                        await self._lead(conn)
                except BusError:  # its relay cannot bind: let another learner lead
                    await conn.execute("SELECT pg_advisory_unlock_all()")
                    raise
                return
            leader = await current_leader(conn, self.settings.lock_key)
        except PG_ERRORS:
            conn.terminate()  # a lock it held went with the session
            self._lock_conn = None
            if self.leading or self._receiver is not None:  # led, or was taking the lead
                async with self._round_lock:
                    await self._step_down("lost its Postgres session")
            raise
        if leader is not None and self._sender is not None:
            if leader.address != self._sender.address:
                log.info(
                    "following leader %s (epoch %d) at %s",
                    leader.leader,
                    leader.epoch,
                    leader.address,
                )
            self._sender.connect(leader.address)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Take over training: the last leader's stored state (this process keeps its own
        join), then receive the others' examples and say where."""
        raw = await load_state(conn, self.settings.lock_key)
        if raw is not None:
            await self._run(lambda: self._adopt(raw))
        self._receiver = receiver = RelayReceiver(self._zmq_context(), self.settings.relay_bind)
        self._relay_task = asyncio.get_running_loop().create_task(
            self._receive_parcels(receiver), name="learner-relay"
        )
        address = self.settings.relay_address or self._receiver.endpoint
        self.epoch = await advertise(conn, self.settings.lock_key, address, self.name)
        self._sequences = Sequences()
        if self._sender is not None:
            self._sender.close()
        self.leading = True
        log.info("leading the fleet's learners (epoch %d), examples to %s", self.epoch, address)

    async def _step_down(self, why: str) -> None:
        log.error("no longer the leading learner: %s", why)
        self.leading = False
        if self._relay_task is not None:
            await cancel_and_wait(self._relay_task)
            self._relay_task = None
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None

    def _zmq_context(self) -> zmq.Context[zmq.Socket[bytes]]:
        assert self._zmq is not None
        return self._zmq

    def _adopt(self, raw: bytes) -> None:
        """The stored training state, with this process's own join (its share's waiting
        examples: the last leader's went with it)."""
        try:
            trained = checkpoint_from_bytes(raw, self.config, "the last leader's state")
        except CheckpointError as exc:
            log.error("not resuming from the last leader: %s", exc)
            return
        trained.joiner = self.learner.joiner
        self.learner = trained
        self._exported_learnt = sum(trained.learnt.values())
        log.info("resumed the last leader's training (%s examples)", dict(trained.learnt))

    async def _receive_parcels(self, receiver: RelayReceiver) -> None:
        while True:
            data = await receiver.recv()
            if len(self._parcels) >= MAX_PARCELS:
                self.relay.labels(outcome="dropped").inc()
                continue
            self._parcels.append(data)

    # -- the loop side ------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    async def _every(self, interval: float, action: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except (*PG_ERRORS, CheckpointError, BusError) as exc:
                log.warning("%s failed: %s", getattr(action, "__name__", "a task"), exc)

    async def _receive(self) -> None:
        assert self._subscriber is not None
        async for delivery in self._subscriber:
            if delivery.kind != "data":
                continue
            for payload in delivery.payloads:
                try:
                    event = decode(payload)
                except msgspec.DecodeError:
                    self.dropped.labels(reason="malformed").inc()
                    continue
                if len(self._buffer) >= MAX_BUFFERED:
                    self.dropped.labels(reason="buffer_full").inc()
                    continue
                self._buffer.append(event)

    async def round(self) -> None:
        """Feed what was received, learn what settled, record the metrics."""
        async with self._round_lock:
            events, self._buffer = self._buffer, []
            parcels, self._parcels = self._parcels, []
            leading = self.leading
            examples, prices = await self._run(lambda: self._learn(events, parcels, leading))
            if not leading and self._sender is not None:
                sent, dropped = self._sender.send_all(examples, prices, self.stream_time)
                self.relay.labels(outcome="sent").inc(sent)
                self.relay.labels(outcome="dropped").inc(dropped)

    async def export(self) -> int:
        """Store and announce a model of what was learnt; its version (0: nothing to export)."""
        learnt = sum(self.learner.learnt.values())
        if self._pool is None or learnt == self._exported_learnt:  # nothing new to export
            return 0
        if self.split and not self.leading:
            return 0
        if not self.split and not await self._still_the_learner():
            return 0
        async with self._round_lock:
            async with self._pool.acquire() as conn:
                version = max(await latest_version(conn), self.model_version) + 1
            model = await self._run(lambda: self._select_and_export(version))
            async with self._pool.acquire() as conn:
                stored = await save_model(conn, model, estimator=self._chosen())
        if not stored:  # another learner took that version first: the next export goes on
            return 0
        self.model_version = version
        self.exports += 1
        self._exported_learnt = learnt
        self.metrics.record_model(version, len(encode_sparse(model)), model.nonzero)
        if self.cache is not None:
            await self.cache.invalidate(MODEL_NAMESPACE, LATEST_KEY, version)
        log.info("model %d exported (%d non-zero weights)", version, model.nonzero)
        return version

    async def checkpoint(self) -> int:
        path = self.settings.checkpoint_file
        async with self._round_lock:
            size = int(await self._run(lambda: self._save(path)))
            if not (self.split and self.leading and self._lock_conn is not None):
                return size
            # after the local file: a crash between the two loses examples, never learns twice
            raw = await self._run(lambda: checkpoint_bytes(self.learner, compress=True))
            key = self.settings.lock_key
            if not await save_state(self._lock_conn, key, self.epoch, raw):
                await self._step_down(f"epoch {self.epoch} was replaced by another leader")
            return size

    # -- the worker side (the learner's state) ------------------------------------------------

    def _resume(self) -> None:
        path = Path(self.settings.checkpoint_file)
        if not path.exists():
            return
        try:
            self.learner = load_checkpoint(path, self.config)
        except CheckpointError as exc:
            aside = path.with_name(path.name + ".unreadable")
            path.replace(aside)
            log.error("checkpoint set aside as %s, learning afresh: %s", aside, exc)
            return
        self.resumed = True
        self._exported_learnt = sum(self.learner.learnt.values())  # exported before it stopped
        self.stream_time = self.learner.market_decayed_at or 0.0
        log.info("resumed from %s (%s examples)", path, dict(self.learner.learnt))

    def _save(self, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(self.learner, path)

    def _learn(
        self, events: list[AnyEvent], parcels: list[bytes], leading: bool
    ) -> tuple[list[Example], list[PriceObservation]]:
        """Leading: learn the events and the others' parcels. Following: join the events, and
        return what settled, for the leader."""
        started = time.perf_counter()
        before = dict(self.learner.learnt)
        learner, joiner = self.learner, self.learner.joiner
        examples: list[Example] = []
        prices: list[PriceObservation] = []
        for event in events:
            if event.ts > self.stream_time:
                self.stream_time = event.ts
            if leading:
                learner.feed(event)
            else:
                e, p = joiner.feed(event)
                examples += e
                prices += p
        for outcome, n in learn_parcels(learner, parcels, self._sequences).items():
            self.relay.labels(outcome=outcome).inc(n)
        if self.stream_time:
            if leading:
                learner.flush(self.stream_time)
            else:
                examples += joiner.flush(self.stream_time)
        learnt: dict[str, int] = {h: n - before.get(h, 0) for h, n in self.learner.learnt.items()}
        joiner = self.learner.joiner
        self.metrics.record_round(
            learnt,
            time.perf_counter() - started,
            self.learner.take_label_delays(),
            joiner.stats,
            joiner.waiting,
            self.learner.nbytes,
            len(self.learner.market.segments),
        )
        return examples, prices

    def _select_and_export(self, version: int) -> SparseModel:
        """Choose each head's estimator (beyond the noise only), then export the chosen ones."""
        for head, selection in self.learner.select(self._rng).items():
            self.metrics.record_selection(head, selection)
        return self.learner.export(version)

    def _chosen(self) -> str:
        return ",".join(f"{h}:{g.chosen}" for h, g in self.learner.grids.items())
