"""The subscribing side of the bus: prefix subscriptions, in-band gap/restart/silence notices."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import zmq
from prometheus_client import CollectorRegistry

from fleet.aio import cancel_and_wait
from fleet.bus.protocol import (
    KIND_DATA,
    Delivery,
    SequenceTracker,
    WireError,
    decode_body,
    decode_header,
)
from fleet.bus.sockets import (
    BUS_MAX_MESSAGE,
    BUS_MAX_PREFIX,
    BusClosedError,
    configure_socket,
    metrics_for,
    open_socket,
)
from fleet.errors import BusError

log = logging.getLogger("fleet.bus")

YIELD_EVERY = 64  # messages received back to back before recv() lets other tasks run
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq's flag enums are slow on the hot path
_RCVMORE = int(zmq.RCVMORE)
_POLLIN = int(zmq.POLLIN)


@dataclass(slots=True)
class SubscriberStats:
    received_messages: int = 0
    received_payloads: int = 0
    gaps: int = 0
    missed_payloads: int = 0
    silent_publishers: int = 0
    restarts: int = 0
    heartbeats: int = 0
    invalid_messages: int = 0


class Subscriber:
    """Receives batches for some topic prefixes and reports gaps, restarts and silence in-band.

    ``recv()`` (or ``async for``) returns :class:`Delivery` objects in arrival order. A publisher
    not heard for ``heartbeat_timeout`` is reported ``silent`` once, until it is heard again.
    Streams first seen mid-sequence during the first ``join_grace`` seconds (default: the
    heartbeat timeout) are joined without a gap: that traffic was sent before we listened.
    While messages wait unread in the socket, silence is judged as of the last time the consumer
    had read everything: what it has not read yet may be the publisher's heartbeat.

    One consumer task per subscriber. Publishers should heartbeat at least three times per
    ``heartbeat_timeout`` (a busy topic skips a heartbeat, so quiet can last two intervals).

    A frame larger than ``max_message`` bytes (BUS_MAX_MESSAGE) is never allocated: ZMQ drops
    the connection it came on. A bound subscriber keeps its other peers (a publisher cut off
    reconnects; what it lost shows as a gap). A connected one does not reconnect after that
    (libzmq ends a connection on a protocol error for good): its publishers are reported
    silent. The proxy takes no larger frame than its subscribers do (the same bound), so only a
    peer that is not our proxy, or a proxy given a larger ``max_message``, can cut one off.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        prefixes: Sequence[str],
        heartbeat_timeout: float = 3.0,
        hwm: int = 100_000,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        registry: CollectorRegistry | None = None,
        bind: bool = False,
        join_grace: float | None = None,
        forget_after: float | None = None,
        max_message: int = BUS_MAX_MESSAGE,
    ) -> None:
        if isinstance(prefixes, str) or not prefixes:
            raise ValueError("prefixes must be a non-empty sequence of topic prefixes")
        if any(len(prefix.encode()) > BUS_MAX_PREFIX for prefix in prefixes):
            raise ValueError(f"a topic prefix is {BUS_MAX_PREFIX} bytes at most")
        if max_message < 1:
            raise ValueError("max_message must be at least 1 byte")
        if heartbeat_timeout <= 0 or hwm < 0:
            raise ValueError("heartbeat_timeout > 0 and hwm >= 0")
        self.endpoint = endpoint
        self.prefixes = tuple(prefixes)
        self.stats = SubscriberStats()
        self._timeout = heartbeat_timeout
        self._join_grace = heartbeat_timeout if join_grace is None else join_grace
        default_forget = max(60.0, 20 * heartbeat_timeout)
        self._forget_after = default_forget if forget_after is None else forget_after
        self._hwm = hwm
        self._max_message = max_message
        self._bind = bind
        self._context = context
        self._own_context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tracker: SequenceTracker | None = None
        self._pending: collections.deque[Delivery] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._topics: dict[bytes, str] = {}
        self._caught_up = 0.0
        self._burst = 0
        self._closed = False
        self._last_gap_log = 0.0
        self._gaps_unlogged = 0
        self._reported = (0, 0)  # received (messages, payloads) the Prometheus counters hold
        metrics = metrics_for(registry)
        self._m_messages = metrics.received_messages.labels(endpoint)
        self._m_payloads = metrics.received_payloads.labels(endpoint)
        self._m_gaps = metrics.gaps.labels(endpoint)
        self._m_missed = metrics.missed_payloads.labels(endpoint)
        self._m_silent = metrics.silent.labels(endpoint)
        self._m_restarts = metrics.restarts.labels(endpoint)
        self._m_invalid = metrics.invalid.labels(endpoint)

    @property
    def bound_endpoint(self) -> str:
        if self._sock is None:
            raise BusError("subscriber not started")
        return str(self._sock.getsockopt_string(zmq.LAST_ENDPOINT))

    async def start(self) -> None:
        if self._loop is not None or self._closed:
            raise BusError("subscriber already started")
        loop = asyncio.get_running_loop()
        if self._context is None:
            self._own_context = zmq.Context()
        ctx = self._context or self._own_context
        assert ctx is not None
        sock = ctx.socket(zmq.SUB)
        configure_socket(sock, self._hwm, max_message=self._max_message)
        for prefix in self.prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        try:
            open_socket(sock, self.endpoint, self._bind)
        except BusError:
            if self._own_context is not None:
                self._own_context.term()
            raise
        self._sock = sock
        self._loop = loop
        now = loop.time()
        self._caught_up = now
        self._tracker = SequenceTracker(
            silence_timeout=self._timeout,
            join_grace=self._join_grace,
            forget_after=self._forget_after,
            started_at=now,
        )
        fd = sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        self._fd = fd
        loop.add_reader(self._fd, self._on_readable)
        self._watch_task = loop.create_task(self._watch(), name=f"bus-watch-{self.endpoint}")

    async def recv(self) -> Delivery:
        """The next delivery: data, or a gap/restart/silent notice. Raises BusClosedError."""
        pending = self._pending
        while True:
            if self._closed:
                raise BusClosedError("subscriber is closed")
            if pending:
                return pending.popleft()
            sock = self._sock
            if sock is None:
                raise BusError("subscriber not started: await start() first")
            try:
                topic = sock.recv(_NOBLOCK)
            except zmq.Again:
                self._burst = 0
                await self._readable()
                continue
            delivery = self._accept(topic, sock)
            if delivery is not None:
                pending.append(delivery)  # queued first: a cancelled recv() loses nothing
            self._burst += 1
            if self._burst >= YIELD_EVERY:
                self._burst = 0
                await asyncio.sleep(0)

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self.recv()
        except BusClosedError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop the watch task and close the socket (linger 0). Idempotent; ends iteration."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        loop, sock = self._loop, self._sock
        if loop is None or sock is None:
            return
        loop.remove_reader(self._fd)
        await cancel_and_wait(self._watch_task)
        sock.close(linger=0)
        self._sock = None
        self._sync_metrics()
        if self._own_context is not None:
            self._own_context.term()

    async def _readable(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._waiter is not None:
            raise BusError("another task is already waiting in recv(): one consumer per subscriber")
        self._caught_up = loop.time()
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self._sock is not None:
            # nobody waits: let ZMQ consume the edge so the fd stops polling readable
            self._sock.getsockopt(zmq.EVENTS)

    def _topic(self, raw: bytes) -> str:
        topic = self._topics.get(raw)
        if topic is None:
            topic = raw.decode("utf-8", "replace")
            if len(self._topics) < 65_536:
                self._topics[raw] = topic
        return topic

    @staticmethod
    def _rest(sock: zmq.Socket[bytes]) -> tuple[bytes, bytes]:
        """Header and body frames after the topic (the parts of a message arrive together).
        Foreign framing is skipped whole, without eating into the next message."""
        more = sock.getsockopt
        if not more(_RCVMORE):
            raise WireError("message of 1 frame")
        header = sock.recv(_NOBLOCK)
        if not more(_RCVMORE):
            raise WireError("message of 2 frames")
        body = sock.recv(_NOBLOCK)
        if more(_RCVMORE):
            while more(_RCVMORE):  # ends with the message: its parts are all here
                sock.recv(_NOBLOCK)
            raise WireError("message with more than 3 frames")
        return header, body

    def _accept(self, raw_topic: bytes, sock: zmq.Socket[bytes]) -> Delivery | None:
        """Account one message; notices go to the pending queue, data is returned."""
        tracker, loop = self._tracker, self._loop
        assert tracker is not None and loop is not None
        stats = self.stats
        try:
            header_frame, body = self._rest(sock)
            header = decode_header(header_frame)
            # an unreadable body is a lost message: the next one reveals the gap
            payloads = decode_body(body) if header.kind == KIND_DATA else []
        except WireError as exc:
            stats.invalid_messages += 1
            self._m_invalid.inc()
            log.debug("subscriber %s: skipped a message: %s", self.endpoint, exc)
            return None
        topic = self._topic(raw_topic)
        notices = tracker.observe(topic, header, len(payloads), loop.time())
        if notices:
            self._note(notices)
        if header.kind != KIND_DATA:
            stats.heartbeats += 1
            return None
        stats.received_messages += 1
        stats.received_payloads += len(payloads)
        return Delivery(
            "data",
            topic,
            header.publisher_id,
            header.seq,
            payloads,
            header.sent_at,
            header.incarnation,
            total=header.total,
        )

    def _note(self, notices: list[Delivery]) -> None:
        stats = self.stats
        for notice in notices:
            if notice.kind == "gap":
                stats.gaps += 1
                stats.missed_payloads += notice.missed
                self._m_gaps.inc()
                self._m_missed.inc(notice.missed)
                self._log_gap(notice)
            elif notice.kind == "silent":
                stats.silent_publishers += 1
                self._m_silent.inc()
                log.warning("publisher %s silent on %s", notice.publisher_id, self.endpoint)
            elif notice.kind == "restart":
                stats.restarts += 1
                self._m_restarts.inc()
                log.info("publisher %s restarted (no goodbye)", notice.publisher_id)
            self._pending.append(notice)

    def _log_gap(self, notice: Delivery) -> None:
        """At most one gap line per 10 s per subscriber: gaps can come in floods."""
        self._gaps_unlogged += 1
        now = time.monotonic()
        if now - self._last_gap_log >= 10.0:
            log.warning(
                "subscriber %s: %d gap(s), latest %s %s seq %d..%d (%d payloads)",
                self.endpoint,
                self._gaps_unlogged,
                notice.publisher_id,
                notice.topic,
                notice.expected,
                notice.seq - 1,
                notice.missed,
            )
            self._last_gap_log = now
            self._gaps_unlogged = 0

    async def _watch(self) -> None:
        loop, tracker = self._loop, self._tracker
        assert loop is not None and tracker is not None
        period = max(0.01, self._timeout / 10)
        while True:
            await asyncio.sleep(period)
            # judge silence only against what we have read: unread messages may be heartbeats
            now = loop.time() if self._all_read() else self._caught_up
            notices = tracker.check_silence(now)
            if notices:
                self._note(notices)
                self._wake()
            self._sync_metrics()

    def _all_read(self) -> bool:
        """Whether every message that arrived has been accounted (not just queued in ZMQ)."""
        if self._waiter is not None:
            return True
        sock = self._sock
        return sock is not None and not int(sock.getsockopt(zmq.EVENTS)) & _POLLIN

    def _sync_metrics(self) -> None:
        """Bring the received counters up to ``stats`` (kept off the per-message path)."""
        messages, payloads = self.stats.received_messages, self.stats.received_payloads
        self._m_messages.inc(messages - self._reported[0])
        self._m_payloads.inc(payloads - self._reported[1])
        self._reported = (messages, payloads)
