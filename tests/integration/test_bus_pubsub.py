"""fleet.bus publishers and subscribers over real ZMQ sockets on loopback (no proxy)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import msgspec
import pytest
import zmq
from prometheus_client import CollectorRegistry

from fleet.bus import BusClosedError, Delivery, Publisher, Subscriber
from fleet.bus.protocol import KIND_DATA, encode_body, encode_header
from fleet.errors import BusError
from fleet.events import partition_prefix

pytestmark = pytest.mark.integration

ANY_PORT = "tcp://127.0.0.1:*"


async def receive(sub: Subscriber, timeout: float) -> Delivery | None:
    try:
        async with asyncio.timeout(timeout):
            return await sub.recv()
    except TimeoutError:
        return None


async def until_subscribed(pub: Publisher, subs: list[tuple[Subscriber, str]]) -> None:
    """Publish on each subscriber's probe topic until each has received one (slow joiners)."""
    waiting = dict(subs)
    async with asyncio.timeout(5):
        while waiting:
            for topic in set(waiting.values()):
                pub.publish_now(topic, b"probe")
            for sub in list(waiting):
                delivery = await receive(sub, 0.02)
                if delivery is not None and delivery.kind == "data":
                    del waiting[sub]
    for sub, _ in subs:  # drain the surplus probes
        while await receive(sub, 0.05) is not None:
            pass


async def take_payloads(sub: Subscriber, count: int, timeout: float = 5) -> list[Delivery]:
    deliveries: list[Delivery] = []
    got = 0
    async with asyncio.timeout(timeout):
        while got < count:
            delivery = await sub.recv()
            deliveries.append(delivery)
            got += len(delivery.payloads)
    return deliveries


@pytest.fixture
async def bound_publisher() -> AsyncIterator[Publisher]:
    pub = Publisher(ANY_PORT, publisher_id="pub-1", bind=True, heartbeat_interval=0.05)
    await pub.start()
    yield pub
    await pub.close()


async def test_prefix_subscription_is_exact_for_fixed_width_partitions(
    bound_publisher: Publisher,
) -> None:
    pub = bound_publisher
    one = Subscriber(pub.bound_endpoint, prefixes=[partition_prefix(1)])
    ten = Subscriber(pub.bound_endpoint, prefixes=[partition_prefix(10)])
    await one.start()
    await ten.start()
    try:
        assert partition_prefix(1) == "ev.0001."
        await until_subscribed(pub, [(one, "ev.0001.probe"), (ten, "ev.0010.probe")])
        for i in range(100):
            pub.publish("ev.0001.bid", b"one-%d" % i)
            pub.publish("ev.0010.bid", b"ten-%d" % i)
        pub.publish_now("ev.0001.fence", b"fence")  # sent after both batches above
        pub.publish_now("ev.0010.fence", b"fence")
        for sub, mine in ((one, b"one-"), (ten, b"ten-")):
            seen: list[bytes] = []
            async with asyncio.timeout(5):
                while b"fence" not in seen:
                    seen.extend((await sub.recv()).payloads)
            assert seen == [mine + b"%d" % i for i in range(100)] + [b"fence"]
        assert one.stats.gaps == ten.stats.gaps == 0
    finally:
        await one.close()
        await ten.close()


async def test_batches_go_out_when_full_or_after_the_delay() -> None:
    pub = Publisher(ANY_PORT, publisher_id="batcher", bind=True, batch_max=10, batch_delay=0.05)
    await pub.start()
    sub = Subscriber(pub.bound_endpoint, prefixes=["ev.", "co."])
    await sub.start()
    try:
        await until_subscribed(pub, [(sub, "ev.0000.probe")])
        sent_before = pub.stats.sent_messages
        for i in range(25):
            pub.publish("ev.0002.bid", b"%d" % i)
        assert pub.stats.sent_messages - sent_before == 2  # two full batches, no await needed
        deliveries = await take_payloads(sub, 25)
        assert [len(d.payloads) for d in deliveries] == [10, 10, 5]
        assert [d.seq for d in deliveries] == [1, 2, 3]
        assert [p for d in deliveries for p in d.payloads] == [b"%d" % i for i in range(25)]
        # publish_now goes after whatever is batched, on any topic
        pub.publish("ev.0002.bid", b"batched")
        pub.publish_now("co.cache.users", b"now")
        first, second = await take_payloads(sub, 2)
        assert (first.topic, first.payloads) == ("ev.0002.bid", [b"batched"])
        assert (second.topic, second.payloads) == ("co.cache.users", [b"now"])
        assert second.publisher_id == "batcher" and second.incarnation == pub.incarnation
    finally:
        await sub.close()
        await pub.close()


async def test_full_high_water_mark_is_a_counted_drop_and_reported_as_gaps() -> None:
    registry = CollectorRegistry()
    pub = Publisher(
        ANY_PORT,
        publisher_id="flooder",
        bind=True,
        hwm=4,
        batch_max=1,
        heartbeat_interval=0.05,
        registry=registry,
    )
    await pub.start()
    sub = Subscriber(pub.bound_endpoint, prefixes=["co."], hwm=4, registry=registry)
    await sub.start()
    try:
        await until_subscribed(pub, [(sub, "co.flood")])
        probes = pub.stats.sent_messages + pub.stats.dropped_payloads  # seqs used so far
        # the subscriber stalls (nobody calls recv) while the publisher floods
        dropped_seqs: list[int] = []
        big = b"x" * 65_536
        for seq in range(probes + 1, probes + 5_001):
            before = pub.stats.dropped_payloads
            pub.publish("co.flood", big)
            if pub.stats.dropped_payloads > before:
                dropped_seqs.append(seq)
                if len(dropped_seqs) >= 20:
                    break
            if seq % 16 == 0:
                await asyncio.sleep(0)
        last_seq = seq
        assert len(dropped_seqs) == 20, "the high-water mark was never reached"
        assert dropped_seqs[-1] == last_seq  # the tail is lost: only a heartbeat can tell
        # the subscriber resumes: everything is either received or reported missing
        received: set[int] = set()
        reported: set[int] = set()
        async with asyncio.timeout(10):
            while len(received | reported) < last_seq - probes:
                delivery = await sub.recv()
                if delivery.kind == "data" and delivery.seq > probes:
                    received.add(delivery.seq)
                elif delivery.kind == "gap":
                    assert delivery.expected > probes
                    reported.update(range(delivery.expected, delivery.seq))
        assert reported == set(dropped_seqs)
        assert not received & reported
        assert sub.stats.missed_payloads == pub.stats.dropped_payloads == 20
        assert sub.stats.received_payloads >= last_seq - probes - 20
        await pub.close()
        await sub.close()
        for name, value in (
            ("fleet_bus_dropped_payloads_total", 20),
            ("fleet_bus_missed_payloads_total", 20),
            ("fleet_bus_sequence_gaps_total", sub.stats.gaps),
            ("fleet_bus_received_messages_total", sub.stats.received_messages),
            ("fleet_bus_sent_messages_total", pub.stats.sent_messages),
        ):
            total = sum(
                registry.get_sample_value(name, {"endpoint": endpoint}) or 0
                for endpoint in {pub.endpoint, sub.endpoint}
            )
            assert total == value, name
        assert sub.stats.gaps >= 1
    finally:
        await sub.close()
        await pub.close()


async def test_stopped_publisher_is_silent_and_a_closed_one_is_not() -> None:
    sub = Subscriber(ANY_PORT, prefixes=["co."], bind=True, heartbeat_timeout=0.4, join_grace=5)
    await sub.start()
    stopped = Publisher(sub.bound_endpoint, publisher_id="stopped", heartbeat_interval=0.05)
    closed = Publisher(sub.bound_endpoint, publisher_id="closed", heartbeat_interval=0.05)
    await stopped.start()
    await closed.start()
    try:
        stopped.publish_now("co.cache.a", b"1")
        closed.publish_now("co.cache.b", b"1")
        await take_payloads(sub, 2)
        await asyncio.sleep(0.6)  # heartbeats keep both alive past the timeout
        assert sub.stats.silent_publishers == 0
        stopped.terminate()  # no flush, no goodbye: as if the process hung or died
        await closed.close()
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        notice = await receive(sub, 2.0)
        assert notice is not None
        assert (notice.kind, notice.publisher_id) == ("silent", "stopped")
        assert loop.time() - stopped_at < 0.4 + 0.2  # the timeout plus one check period
        assert await receive(sub, 1.0) is None  # "closed" said goodbye; "stopped" reported once
        assert sub.stats.silent_publishers == 1 and sub.stats.gaps == 0
    finally:
        stopped.terminate()
        await closed.close()
        await sub.close()


async def test_consumer_that_falls_behind_is_not_told_of_false_silence(
    bound_publisher: Publisher,
) -> None:
    pub = bound_publisher
    sub = Subscriber(pub.bound_endpoint, prefixes=["co."], heartbeat_timeout=0.2, join_grace=5)
    await sub.start()
    try:
        await until_subscribed(pub, [(sub, "co.x")])
        await asyncio.sleep(1.0)  # busy elsewhere: heartbeats queue up unread
        for _ in range(50):
            delivery = await receive(sub, 0.01)
            if delivery is None:
                break
            assert delivery.kind != "silent"
        assert sub.stats.silent_publishers == 0
        assert sub.stats.heartbeats > 0
    finally:
        await sub.close()


async def test_foreign_messages_are_skipped_whole_and_counted() -> None:
    sub = Subscriber(ANY_PORT, prefixes=["co."], bind=True)
    await sub.start()
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.connect(sub.bound_endpoint)
    try:
        good = encode_header(KIND_DATA, 9, 1, 1, 0.0, b"raw")
        junk = [
            [b"co.junk"],
            [b"co.junk", good],
            [b"co.junk", b"not a header at all, no", encode_body([b"x"])],
            [b"co.junk", good, b"\xc1"],
            [b"co.junk", good, encode_body([b"x"]), b"extra"],
        ]
        async with asyncio.timeout(5):
            while sub.stats.invalid_messages == 0:  # slow joiner: resend until heard
                for frames in junk:
                    raw.send_multipart(frames)
                raw.send_multipart([b"co.fence", good, encode_body([b"fence"])])
                delivery = await receive(sub, 0.05)
                if delivery is not None and delivery.payloads == [b"fence"]:
                    break
            while await receive(sub, 0.1) is not None:  # leftovers of the joining rounds
                pass
            before = sub.stats.invalid_messages
            for frames in junk:
                raw.send_multipart(frames)
            raw.send_multipart([b"co.fence", good, encode_body([b"last fence"])])
            while True:
                delivery = await sub.recv()
                if delivery.payloads == [b"last fence"]:
                    break
        assert sub.stats.invalid_messages - before == 5
    finally:
        raw.close(linger=0)
        ctx.term()
        await sub.close()


async def test_lifecycle_errors_and_idempotent_close() -> None:
    pub = Publisher(ANY_PORT, publisher_id="life", bind=True)
    with pytest.raises(BusError, match="not started"):
        pub.publish("co.x", b"1")
    await pub.start()
    with pytest.raises(BusError, match="already started"):
        await pub.start()
    await pub.close()
    await pub.close()
    pub.publish("co.x", b"late")  # during shutdown: counted, never raised
    pub.publish_now("co.x", b"late")
    assert pub.stats.dropped_payloads == 2
    pub.terminate()

    sub = Subscriber(ANY_PORT, prefixes=["co."], bind=True)
    with pytest.raises(ValueError):
        Subscriber(ANY_PORT, prefixes="co.")
    await sub.start()
    consumed: list[Delivery] = []

    async def consume() -> None:
        async for delivery in sub:
            consumed.append(delivery)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await sub.close()
    async with asyncio.timeout(2):
        await task  # iteration ends cleanly on close
    assert consumed == []
    with pytest.raises(BusClosedError):
        await sub.recv()
    await sub.close()


async def test_bind_failure_names_the_endpoint() -> None:
    first = Publisher(ANY_PORT, publisher_id="a", bind=True)
    await first.start()
    try:
        taken = first.bound_endpoint
        second = Publisher(taken, publisher_id="b", bind=True)
        with pytest.raises(BusError, match=re.escape(taken)):
            await second.start()
        sub = Subscriber(taken, prefixes=["x"], bind=True)
        with pytest.raises(BusError, match="cannot bind"):
            await sub.start()
    finally:
        await first.close()


async def test_two_buses_share_one_registry() -> None:
    registry = CollectorRegistry()
    events = Publisher(ANY_PORT, publisher_id="b1", bind=True, registry=registry)
    coherence = Publisher(ANY_PORT, publisher_id="b1", bind=True, registry=registry)
    await events.start()
    await coherence.start()
    sub = Subscriber(events.bound_endpoint, prefixes=["ev."], registry=registry)
    await sub.start()
    try:
        await until_subscribed(events, [(sub, "ev.0001.bid")])
        coherence.publish_now("co.cache.x", msgspec.msgpack.encode({"k": 1}))
        await events.close()
        await coherence.close()
        value = registry.get_sample_value(
            "fleet_bus_sent_messages_total", {"endpoint": events.endpoint}
        )
        assert value == events.stats.sent_messages + coherence.stats.sent_messages
    finally:
        await sub.close()
        await events.close()
        await coherence.close()
