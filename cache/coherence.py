"""The coherence-bus adapter: cache messages out through a fleet.bus Publisher, in through a
Subscriber to ``co.cache.``; gaps and silent publishers reported to the cache.

Gap, restart and silence notices come in-band from the subscriber (fleet.bus); a restart (a
publisher back as a new incarnation without a goodbye) is treated like silence: the tail of its
previous life may be lost.

Every process hears its own messages too; a ``ping`` it sent coming back proves the path
through the proxy is live (subscriptions reach a publisher a moment after it connects, and what
it publishes before that is lost), which :meth:`CoherenceBus.wait_ready` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from cache.codec import TOPIC_PREFIX, Message, decode_message, encode_message, topic
from cache.errors import CodecError
from fleet.aio import cancel_and_wait
from fleet.bus import Delivery, Publisher, Subscriber

log = logging.getLogger("cache.coherence")

PING_TOPIC = f"{TOPIC_PREFIX}_ping"

OnMessage = Callable[[str, str, Message], None]
OnGap = Callable[[str, str], None]
OnSilent = Callable[[str, set[str]], None]


class CoherenceBus:
    """Publish and hear cache messages; see the module doc."""

    def __init__(
        self,
        publish_endpoint: str,
        subscribe_endpoint: str,
        *,
        origin: str,
        heartbeat_timeout: float,
        on_message: OnMessage,
        on_gap: OnGap,
        on_silent: OnSilent,
        heartbeat_interval: float | None = None,
        prefixes: tuple[str, ...] = (TOPIC_PREFIX,),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.origin = origin
        interval = heartbeat_interval if heartbeat_interval is not None else heartbeat_timeout / 3
        self.publisher = Publisher(
            publish_endpoint,
            publisher_id=origin,
            heartbeat_interval=interval,
            registry=registry,
            join_timeout=heartbeat_timeout,
        )
        self.subscriber: Subscriber | None = None
        if prefixes:
            self.subscriber = Subscriber(
                subscribe_endpoint,
                prefixes=list(prefixes),
                heartbeat_timeout=heartbeat_timeout,
                registry=registry,
            )
        self._on_message = on_message
        self._on_gap = on_gap
        self._on_silent = on_silent
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._topics: dict[str, set[str]] = {}
        self._closed = False
        self.undecodable = 0

    async def start(self) -> None:
        await self.publisher.start()
        if self.subscriber is not None:
            await self.subscriber.start()
            self._task = asyncio.get_running_loop().create_task(
                self._receive(), name="cache-coherence"
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._task)
        if self.subscriber is not None:
            await self.subscriber.close()
        await self.publisher.close()

    def publish(self, message: Message) -> None:
        self.publisher.publish_now(topic(message.namespace), encode_message(message))

    async def wait_ready(self, timeout: float) -> bool:
        """Ping until this process hears its own ping (the path through the proxy is live)."""
        if self.subscriber is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._ready.is_set() and loop.time() < deadline:
            ping = Message("ping", "_ping", "", 0, self.origin)
            self.publisher.publish_now(PING_TOPIC, encode_message(ping))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._ready.wait(), min(0.05, max(0.0, deadline - loop.time()))
                )
        return self._ready.is_set()

    async def _receive(self) -> None:
        assert self.subscriber is not None
        async for delivery in self.subscriber:
            try:
                self._dispatch(delivery)
            except Exception:
                log.exception("coherence message from %s not handled", delivery.publisher_id)

    def _dispatch(self, d: Delivery) -> None:
        if d.kind == "data":
            self._topics.setdefault(d.publisher_id, set()).add(d.topic)
            for payload in d.payloads:
                try:
                    message = decode_message(payload)
                except CodecError as exc:
                    self.undecodable += 1
                    log.warning("undecodable coherence message on %s: %s", d.topic, exc)
                    continue
                if message.op == "ping":
                    if message.origin == self.origin:
                        self._ready.set()
                    continue
                self._on_message(d.publisher_id, d.topic, message)
        elif d.kind == "gap":
            self._on_gap(d.publisher_id, d.topic)
        elif d.kind in ("silent", "restart"):
            # Silent, or back as a new incarnation without a goodbye: the tail of what it said
            # may be lost. A restarted publisher's new topics are collected afresh.
            self._on_silent(d.publisher_id, self._topics.pop(d.publisher_id, set()))
