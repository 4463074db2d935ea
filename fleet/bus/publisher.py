"""The publishing side of the bus: per-topic batches onto an XPUB socket, heartbeats, goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass

import zmq
from prometheus_client import CollectorRegistry

from fleet.aio import cancel_and_wait
from fleet.bus.protocol import KIND_BYE, KIND_DATA, KIND_HEARTBEAT, encode_body, encode_header
from fleet.bus.sockets import (
    BUS_MAX_MESSAGE,
    BUS_MAX_SUBSCRIPTION,
    configure_socket,
    metrics_for,
    open_socket,
)
from fleet.errors import BusError

log = logging.getLogger("fleet.bus")

JOIN_SETTLE = 0.05  # after the handshake, how long the proxy gets to send its subscriptions
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: or-ing pyzmq's flag enums costs a microsecond
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_MORE = int(zmq.SNDMORE)


@dataclass(slots=True)
class PublisherStats:
    """Counts since start. "Sent" means handed to ZMQ (which filters out topics nobody
    subscribes to); "dropped" means refused at the high-water mark or published after close."""

    sent_messages: int = 0
    sent_payloads: int = 0
    dropped_payloads: int = 0
    heartbeats: int = 0


class _Stream:
    __slots__ = ("active", "seq", "topic", "total")

    def __init__(self, topic: bytes) -> None:
        self.topic = topic
        self.seq = 0
        self.total = 0
        self.active = False  # data sent since the last heartbeat tick


class Publisher:
    """Batches payloads per topic onto an XPUB socket; never blocks the event loop.

    ``publish()`` appends to the topic's batch; a batch goes out when it holds ``batch_max``
    payloads or ``batch_delay`` seconds after its first payload. Sends are non-blocking with
    XPUB_NODROP, so a full high-water mark is a counted drop (``dropped_payloads``), never a
    silent one. ``close()`` flushes, says goodbye on every topic and gives ZMQ up to
    ``close_timeout`` seconds to put the queue on the wire; ``terminate()`` drops everything now.

    Order is kept per topic; ``publish_now()`` also keeps it across topics. On a bus with many
    topics (the event bus has partitions x types), a batch only fills when its topic is busy:
    at modest rates a longer ``batch_delay`` (say 20-50 ms) is what makes batches.

    When connecting (to a proxy), ``start()`` waits up to ``join_timeout`` for the proxy to hand
    over its subscriptions, so that the first messages are not filtered away unseen.

    Fan out through the proxy, not with ``bind=True`` and many subscribers: with XPUB_NODROP one
    slow subscriber of a bound publisher fails the sends to all; the proxy drops per subscriber.

    No body larger than ``max_message`` bytes goes out (the receivers' bound, BUS_MAX_MESSAGE):
    a batch whose body would be larger is sent in halves, and a payload that alone is larger is
    dropped (counted and logged; it consumes a sequence number, so subscribers see a gap).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        publisher_id: str,
        bind: bool = False,
        hwm: int = 100_000,
        batch_max: int = 256,
        batch_delay: float = 0.002,
        heartbeat_interval: float = 1.0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        registry: CollectorRegistry | None = None,
        join_timeout: float = 1.0,
        close_timeout: float = 1.0,
        incarnation: int | None = None,
        max_message: int = BUS_MAX_MESSAGE,
    ) -> None:
        if not publisher_id or len(publisher_id.encode()) > 255:
            raise ValueError("publisher_id must be 1 to 255 bytes")
        if batch_max < 1 or batch_delay < 0 or heartbeat_interval <= 0 or hwm < 0:
            raise ValueError("batch_max >= 1, batch_delay >= 0, heartbeat_interval > 0, hwm >= 0")
        if max_message < 1:
            raise ValueError("max_message must be at least 1 byte")
        self.endpoint = endpoint
        self.publisher_id = publisher_id
        self.incarnation = (
            int.from_bytes(os.urandom(8), "little") if incarnation is None else incarnation
        )
        self.stats = PublisherStats()
        self._pid = publisher_id.encode()
        self._bind = bind
        self._hwm = hwm
        self._batch_max = batch_max
        self._batch_delay = batch_delay
        self._max_message = max_message
        self._interval = heartbeat_interval
        self._join_timeout = join_timeout
        self._close_timeout = close_timeout
        self._context = context
        self._own_context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batches: dict[str, list[bytes]] = {}
        self._streams: dict[str, _Stream] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closed = False
        self._reported = PublisherStats()  # what the Prometheus counters already hold
        metrics = metrics_for(registry)
        self._m_sent_messages = metrics.sent_messages.labels(endpoint)
        self._m_sent_payloads = metrics.sent_payloads.labels(endpoint)
        self._m_dropped = metrics.dropped_payloads.labels(endpoint)
        self._m_heartbeats = metrics.heartbeats.labels(endpoint)

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound or connected (resolves ``tcp://127.0.0.1:*``)."""
        if self._sock is None:
            raise BusError("publisher not started")
        return str(self._sock.getsockopt_string(zmq.LAST_ENDPOINT))

    async def start(self) -> None:
        """Bind or connect (BusError if that fails), join, start the heartbeats."""
        if self._sock is not None or self._closed:
            raise BusError("publisher already started")
        loop = asyncio.get_running_loop()
        if self._context is None:
            self._own_context = zmq.Context()
        ctx = self._context or self._own_context
        assert ctx is not None
        sock = ctx.socket(zmq.XPUB)
        # an XPUB receives only subscriptions
        configure_socket(sock, self._hwm, max_message=BUS_MAX_SUBSCRIPTION)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        monitor = None
        if not self._bind and self._join_timeout > 0:
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            open_socket(sock, self.endpoint, self._bind)
        except BusError:
            if monitor is not None:
                monitor.close(linger=0)
            if self._own_context is not None:
                self._own_context.term()
            raise
        self._sock = sock
        if monitor is not None:
            try:
                await self._join(loop, monitor)
            finally:
                sock.disable_monitor()
                monitor.close(linger=0)
        self._loop = loop  # publishing is open from here
        self._heartbeat_task = loop.create_task(
            self._heartbeats(), name=f"bus-heartbeats-{self.publisher_id}"
        )

    async def _join(self, loop: asyncio.AbstractEventLoop, monitor: zmq.Socket[bytes]) -> None:
        """Wait until the proxy has sent its subscriptions (or has none, or join_timeout)."""
        deadline = loop.time() + self._join_timeout
        connected_at: float | None = None
        while True:
            if self._drain_subscriptions():
                return
            now = loop.time()
            if connected_at is None:
                with contextlib.suppress(zmq.Again):
                    monitor.recv_multipart(zmq.NOBLOCK)
                    connected_at = now
            elif now - connected_at >= JOIN_SETTLE:
                return
            if now >= deadline:
                log.info("publisher %s: %s not reachable yet", self.publisher_id, self.endpoint)
                return
            await asyncio.sleep(0.002)

    def _drain_subscriptions(self) -> int:
        """Read the XPUB's subscription messages (ZMQ applies them to its filter as it does)."""
        sock = self._sock
        count = 0
        while sock is not None and count < 100_000:
            try:
                sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            count += 1
        return count

    def publish(self, topic: str, payload: bytes) -> None:
        """Append to the topic's batch. Never blocks, never awaits."""
        batch = self._batches.get(topic)
        if batch is None:
            if self._loop is None or self._closed:
                self._reject(1)
                return
            batch = self._batches[topic] = []
            if self._timer is None:
                self._timer = self._loop.call_later(self._batch_delay, self._on_timer)
        batch.append(payload)
        if len(batch) >= self._batch_max:
            del self._batches[topic]
            self._send(topic, batch)

    def publish_now(self, topic: str, payload: bytes) -> None:
        """Send at once as a batch of one, after everything already batched (so this publisher's
        messages stay in publishing order across topics too)."""
        if self._loop is None or self._closed:
            self._reject(1)
            return
        self._flush_all()
        self._send(topic, [payload])

    async def flush(self) -> None:
        self._flush_all()

    async def close(self) -> None:
        """Flush, say goodbye on every topic, stop the heartbeats, close the socket. Idempotent."""
        if self._closed:
            return
        self._flush_all()
        self._closed = True
        sock = self._sock
        if sock is None:
            return
        await self._stop_tasks()
        for stream in self._streams.values():
            self._control(stream, KIND_BYE)
        self._sync_metrics()
        sock.close(linger=int(self._close_timeout * 1000))
        self._sock = None
        if self._own_context is not None:
            # term() returns once the queue is on the wire or the linger has passed
            await asyncio.to_thread(self._own_context.term)

    def terminate(self) -> None:
        """Close now without flushing (pending payloads count as dropped) and without goodbye."""
        if self._closed and self._sock is None:
            return
        self._closed = True
        self._reject(sum(len(batch) for batch in self._batches.values()))
        self._batches.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._sync_metrics()
        if self._own_context is not None:
            self._own_context.term()

    async def _stop_tasks(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await cancel_and_wait(self._heartbeat_task)

    def _reject(self, count: int) -> None:
        if self._loop is None and not self._closed:
            raise BusError("publisher not started: await start() first")
        if count:
            self.stats.dropped_payloads += count
            self._m_dropped.inc(count)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush_all()

    def _flush_all(self) -> None:
        if not self._batches:
            return
        batches, self._batches = self._batches, {}
        for topic, batch in batches.items():
            self._send(topic, batch)

    def _stream(self, topic: str) -> _Stream:
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream(topic.encode())
        return stream

    def _send(self, topic: str, payloads: list[bytes]) -> None:
        body = encode_body(payloads)
        count = len(payloads)
        if len(body) > self._max_message and count > 1:
            half = count // 2  # receivers would disconnect us for this body: send it in halves
            self._send(topic, payloads[:half])
            self._send(topic, payloads[half:])
            return
        stream = self._stream(topic)
        stream.seq += 1  # consumed even if the send fails: the drop shows as a gap downstream
        stream.total += count
        stream.active = True
        if len(body) > self._max_message:
            self.stats.dropped_payloads += 1
            self._m_dropped.inc()
            log.warning(
                "publisher %s: dropped a payload of %d bytes on %s (the bus takes %d at most)",
                self.publisher_id,
                len(payloads[0]),
                topic,
                self._max_message,
            )
            return
        header = encode_header(
            KIND_DATA, self.incarnation, stream.seq, stream.total, time.time(), self._pid
        )
        sock = self._sock
        assert sock is not None
        try:
            sock.send(stream.topic, _NOBLOCK_MORE)
        except zmq.Again:
            self.stats.dropped_payloads += count
            self._m_dropped.inc(count)
            return
        sock.send(header, _MORE)  # the first frame passed the HWM check: the rest follow
        sock.send(body)
        stats = self.stats
        stats.sent_messages += 1
        stats.sent_payloads += count

    def _control(self, stream: _Stream, kind: int) -> bool:
        header = encode_header(
            kind, self.incarnation, stream.seq, stream.total, time.time(), self._pid
        )
        sock = self._sock
        assert sock is not None
        try:
            sock.send_multipart([stream.topic, header, b""], _NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _beat(self) -> None:
        """A heartbeat on every topic that has been quiet since the last tick."""
        for topic, stream in self._streams.items():
            if stream.active:
                stream.active = False
                continue
            if topic in self._batches:
                continue
            if self._control(stream, KIND_HEARTBEAT):
                self.stats.heartbeats += 1

    def _sync_metrics(self) -> None:
        """Bring the Prometheus counters up to ``stats`` (kept off the per-message path)."""
        stats, reported = self.stats, self._reported
        self._m_sent_messages.inc(stats.sent_messages - reported.sent_messages)
        self._m_sent_payloads.inc(stats.sent_payloads - reported.sent_payloads)
        self._m_heartbeats.inc(stats.heartbeats - reported.heartbeats)
        reported.sent_messages = stats.sent_messages
        reported.sent_payloads = stats.sent_payloads
        reported.heartbeats = stats.heartbeats

    async def _heartbeats(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                self._drain_subscriptions()
                self._beat()
                self._sync_metrics()
        except zmq.ZMQError:
            log.exception("publisher %s: heartbeats stopped", self.publisher_id)
