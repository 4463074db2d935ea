"""Bus sockets bound the frames they accept: an oversized frame from a raw ZMQ peer is never
delivered, it costs that peer its connection, and the receiver goes on serving the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from fleet.bus import Delivery, Publisher, Subscriber, configure_socket
from fleet.bus.protocol import KIND_DATA, encode_body, encode_header
from fleet.bus.sockets import BUS_MAX_MESSAGE, BUS_MAX_PREFIX, BUS_MAX_SUBSCRIPTION
from fleet.proxy import run_proxy

pytestmark = pytest.mark.integration

ANY = "tcp://127.0.0.1:*"
HEADER = encode_header(KIND_DATA, 7, 1, 1, 0.0, b"raw")


class RawPeer:
    """A plain ZMQ socket with a monitor, to send what no bus publisher would."""

    def __init__(self, kind: int) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.context.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )

    async def event(self, wanted: int, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"] == wanted:
                        return
                except zmq.Again:
                    await asyncio.sleep(0.005)

    async def recv(self, timeout: float = 5) -> bytes:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    return self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    await asyncio.sleep(0.005)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)
        self.context.term()


@contextlib.asynccontextmanager
async def raw_peer(kind: int) -> AsyncIterator[RawPeer]:
    peer = RawPeer(kind)
    try:
        yield peer
    finally:
        peer.close()


async def first_data(sub: Subscriber, timeout: float = 0.05) -> Delivery | None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                delivery = await sub.recv()
                if delivery.kind == "data":
                    return delivery
    except TimeoutError:
        return None


async def until_delivered(pub: Publisher, sub: Subscriber, payload: bytes) -> list[Delivery]:
    """Publish ``payload`` on co.good until the subscriber has it; every data delivery seen."""
    seen: list[Delivery] = []
    async with asyncio.timeout(10):
        while True:
            pub.publish_now("co.good", payload)
            delivery = await first_data(sub)
            if delivery is not None:
                seen.append(delivery)
                if delivery.payloads == [payload]:
                    return seen


def oversized(limit: int) -> list[bytes]:
    """A message in the bus format whose body is one byte over ``limit``."""
    return [b"co.big", HEADER, b"\0" * (limit + 1)]


@contextlib.asynccontextmanager
async def proxy() -> AsyncIterator[tuple[str, str, asyncio.Task[None]]]:
    endpoints: list[tuple[str, str]] = []
    bound, stop = asyncio.Event(), asyncio.Event()

    def ready(inside: str, outside: str) -> None:
        endpoints.append((inside, outside))
        bound.set()

    task = asyncio.create_task(run_proxy(ANY, ANY, stop=stop, on_ready=ready))
    try:
        async with asyncio.timeout(5):
            await bound.wait()
        yield endpoints[0][0], endpoints[0][1], task
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


async def test_bound_subscriber_drops_the_peer_of_an_oversized_frame_and_hears_the_others() -> None:
    sub = Subscriber(ANY, prefixes=["co."], bind=True)
    await sub.start()
    good = Publisher(sub.bound_endpoint, publisher_id="good")
    try:
        async with raw_peer(zmq.XPUB) as raw:
            raw.sock.connect(sub.bound_endpoint)
            assert await raw.recv() == b"\x01co."  # subscribed: the frame goes on the wire
            raw.sock.send_multipart(oversized(BUS_MAX_MESSAGE))
            await raw.event(zmq.EVENT_DISCONNECTED)  # the subscriber hung up on it
            await good.start()
            seen = await until_delivered(good, sub, b"after")
        assert all(d.topic == "co.good" for d in seen)
        assert sub.stats.invalid_messages == 0  # refused by ZMQ, never read
    finally:
        await good.close()
        await sub.close()


async def test_connected_subscriber_cut_off_by_an_oversized_frame_reports_silence() -> None:
    """libzmq does not reconnect after a protocol error: a subscriber cut off by what its own
    endpoint sent stays off, and says so the way it says a publisher went away. (Our proxy
    never forwards such a frame: it refuses anything larger than its subscribers do.)"""
    limit = 1024
    async with raw_peer(zmq.XPUB) as raw:
        raw.sock.bind(ANY)
        endpoint = raw.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        sub = Subscriber(endpoint, prefixes=["co."], max_message=limit, heartbeat_timeout=0.3)
        await sub.start()
        try:
            assert await raw.recv() == b"\x01co."
            raw.sock.send_multipart([b"co.good", HEADER, encode_body([b"before"])])
            delivery = await first_data(sub, 5)
            assert delivery is not None and delivery.payloads == [b"before"]
            raw.sock.send_multipart(oversized(limit))
            await raw.event(zmq.EVENT_DISCONNECTED)
            async with asyncio.timeout(5):
                notice = await sub.recv()
            assert (notice.kind, notice.publisher_id) == ("silent", "raw")
            assert sub.stats.silent_publishers == 1
            assert sub.stats.invalid_messages == 0
        finally:
            await sub.close()


async def test_proxy_drops_an_oversized_publisher_and_forwards_the_others() -> None:
    async with proxy() as (inside, outside, task):
        sub = Subscriber(outside, prefixes=["co."])
        await sub.start()
        good = Publisher(inside, publisher_id="good")
        try:
            async with raw_peer(zmq.XPUB) as raw:
                raw.sock.connect(inside)
                assert await raw.recv() == b"\x01co."  # the subscription came through the proxy
                raw.sock.send_multipart(oversized(BUS_MAX_MESSAGE))
                await raw.event(zmq.EVENT_DISCONNECTED)
                await good.start()
                seen = await until_delivered(good, sub, b"after")
            assert all(d.topic == "co.good" for d in seen)
            assert sub.stats.invalid_messages == 0
            assert not task.done()
        finally:
            await good.close()
            await sub.close()


async def test_proxy_drops_an_oversized_subscription_and_serves_the_others() -> None:
    async with proxy() as (inside, outside, task):
        sub = Subscriber(outside, prefixes=["co."])
        await sub.start()
        good = Publisher(inside, publisher_id="good")
        try:
            async with raw_peer(zmq.XSUB) as raw:
                raw.sock.connect(outside)
                await raw.event(zmq.EVENT_HANDSHAKE_SUCCEEDED)
                raw.sock.send(b"\x01" + b"c" * BUS_MAX_SUBSCRIPTION)
                await raw.event(zmq.EVENT_DISCONNECTED)
                await good.start()
                await until_delivered(good, sub, b"after")
            assert not task.done()
        finally:
            await good.close()
            await sub.close()


async def test_publisher_splits_a_batch_over_the_bound_and_drops_a_payload_alone_over_it() -> None:
    limit = 1000
    pub = Publisher(
        ANY, publisher_id="split", bind=True, batch_max=100, batch_delay=10.0, max_message=limit
    )
    await pub.start()
    sub = Subscriber(pub.bound_endpoint, prefixes=["co."], max_message=limit)
    await sub.start()
    try:
        await until_delivered(pub, sub, b"probe")
        while await first_data(sub) is not None:  # the surplus probes
            pass
        payloads = [bytes([i]) * 300 for i in range(10)]  # a body of ~3 KB
        for p in payloads:
            pub.publish("co.split", p)
        await pub.flush()
        got: list[bytes] = []
        async with asyncio.timeout(5):
            while len(got) < len(payloads):
                delivery = await sub.recv()
                assert delivery.kind == "data"
                assert len(encode_body(delivery.payloads)) <= limit
                got.extend(delivery.payloads)
        assert got == payloads
        dropped = pub.stats.dropped_payloads
        pub.publish("co.split", b"x" * (limit + 1))
        pub.publish("co.split", b"small")
        await pub.flush()
        assert pub.stats.dropped_payloads == dropped + 1
        async with asyncio.timeout(5):
            gap = await sub.recv()
            data = await sub.recv()
        assert (gap.kind, gap.missed) == ("gap", 1)
        assert data.payloads == [b"small"]
    finally:
        await sub.close()
        await pub.close()


def test_no_unbounded_socket_and_no_prefix_past_the_subscription_bound() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.SUB)
    try:
        with pytest.raises(ValueError, match="max_message"):
            configure_socket(sock, 10, max_message=-1)
        configure_socket(sock, 10, max_message=BUS_MAX_MESSAGE)
        assert sock.getsockopt(zmq.MAXMSGSIZE) == BUS_MAX_MESSAGE
    finally:
        sock.close(linger=0)
        context.term()
    with pytest.raises(ValueError, match="prefix"):
        Subscriber(ANY, prefixes=["co." + "x" * BUS_MAX_PREFIX])
    Subscriber(ANY, prefixes=["x" * BUS_MAX_PREFIX])
