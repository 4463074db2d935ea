"""The bus through a real proxy process (`python -m fleet.proxy`), publishers in child processes.

Run as a script, this module is the publisher child:
    python test_bus_proxy.py <in endpoint> <publisher id> <count> <topic,topic,...> close|hang
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from fleet.bus import Delivery, Publisher, Subscriber
from fleet.events import partition_prefix
from fleet.proxy import run_proxy

pytestmark = pytest.mark.integration

ANY = "tcp://127.0.0.1:*"
CHILD_HEARTBEAT = 0.1


# -- processes -----------------------------------------------------------------------------


class Proxy:
    def __init__(self, process: asyncio.subprocess.Process, inside: str, outside: str) -> None:
        self.process = process
        self.inside = inside
        self.outside = outside

    @classmethod
    async def start(cls, inside: str = ANY, outside: str = ANY) -> Proxy:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleet.proxy",
            "--in",
            inside,
            "--out",
            outside,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("ready "), line
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        return cls(process, fields["in"], fields["out"])

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.communicate()


CHILD = os.path.abspath(__file__)


async def start_publisher(
    inside: str, publisher_id: str, count: int, topics: list[str], mode: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        CHILD,
        inside,
        publisher_id,
        str(count),
        ",".join(topics),
        mode,
        stdout=asyncio.subprocess.PIPE,
    )


async def published(child: asyncio.subprocess.Process) -> None:
    """Wait for the child's "published" line (its data is flushed to ZMQ)."""
    assert child.stdout is not None
    async with asyncio.timeout(10):
        line = await child.stdout.readline()
    assert line.startswith(b"published"), line


async def reap(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.kill()
    await child.wait()


def payload(publisher_id: str, topic: str, index: int) -> bytes:
    return f"{publisher_id}|{topic}|{index}".encode()


async def _child(argv: list[str]) -> int:
    inside, publisher_id, count, topics, mode = argv
    names = topics.split(",")
    pub = Publisher(inside, publisher_id=publisher_id, heartbeat_interval=CHILD_HEARTBEAT)
    await pub.start()
    for i in range(int(count)):
        topic = names[i % len(names)]
        pub.publish(topic, payload(publisher_id, topic, i))
        if i % 100 == 99:
            await asyncio.sleep(0)
    await pub.flush()
    print("published", pub.stats.sent_payloads, pub.stats.dropped_payloads, flush=True)
    if mode == "hang":  # keep heartbeating until killed (bounded all the same)
        await asyncio.sleep(60)
        pub.terminate()
        return 1
    await pub.close()
    return 0


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    running = await Proxy.start()
    try:
        yield running
    finally:
        assert await running.stop() == 0  # SIGTERM is a clean stop


async def until_subscribed(inside: str, subs: list[tuple[Subscriber, str]]) -> None:
    """Probe through the proxy until every subscriber's subscription has reached it."""
    probe = Publisher(inside, publisher_id="probe")
    await probe.start()
    waiting = dict(subs)
    try:
        async with asyncio.timeout(10):
            while waiting:
                for topic in set(waiting.values()):
                    probe.publish_now(topic, b"probe")
                for sub in list(waiting):
                    try:
                        async with asyncio.timeout(0.02):
                            if (await sub.recv()).publisher_id == "probe":
                                del waiting[sub]
                    except TimeoutError:
                        pass
    finally:
        await probe.close()


async def next_notice(sub: Subscriber, timeout: float) -> Delivery | None:
    """The next delivery that is not data, or None within the timeout."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                delivery = await sub.recv()
                if delivery.kind != "data":
                    return delivery
    except TimeoutError:
        return None


# -- tests ------------------------------------------------------------------------------------

TOPICS = ["ev.0001.bid", "ev.0002.win", "ev.0010.bid", "co.cache.users"]
COUNT = 3000


async def test_three_publishers_three_subscribers_every_message_in_order(proxy: Proxy) -> None:
    wanted = {
        "all-events": ["ev."],
        "partition-1": [partition_prefix(1)],
        "cache-and-2": ["co.", partition_prefix(2)],
    }
    subs = {name: Subscriber(proxy.outside, prefixes=prefixes) for name, prefixes in wanted.items()}
    for sub in subs.values():
        await sub.start()
    children: list[asyncio.subprocess.Process] = []
    try:
        await until_subscribed(
            proxy.inside,
            [
                (subs["all-events"], "ev.0001.probe"),
                (subs["partition-1"], "ev.0001.probe"),
                (subs["cache-and-2"], "co.probe"),
            ],
        )
        publishers = ["bidder-1", "bidder-2", "tracker-1"]
        for pid in publishers:
            children.append(await start_publisher(proxy.inside, pid, COUNT, TOPICS, "close"))
        expected: dict[str, dict[tuple[str, str], list[bytes]]] = {}
        for name, prefixes in wanted.items():
            streams: dict[tuple[str, str], list[bytes]] = defaultdict(list)
            for pid in publishers:
                for i in range(COUNT):
                    topic = TOPICS[i % len(TOPICS)]
                    if topic.startswith(tuple(prefixes)):
                        streams[pid, topic].append(payload(pid, topic, i))
            expected[name] = dict(streams)

        async def collect(sub: Subscriber, total: int) -> dict[tuple[str, str], list[Delivery]]:
            got: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
            count = 0
            async with asyncio.timeout(20):
                while count < total:
                    delivery = await sub.recv()
                    if delivery.publisher_id == "probe":
                        continue
                    assert delivery.kind == "data", delivery
                    got[delivery.publisher_id, delivery.topic].append(delivery)
                    count += len(delivery.payloads)
            return got

        results = await asyncio.gather(
            *(collect(subs[name], sum(map(len, expected[name].values()))) for name in wanted)
        )
        for name, got in zip(wanted, results, strict=True):
            assert set(got) == set(expected[name]), name
            for stream, deliveries in got.items():
                assert [p for d in deliveries for p in d.payloads] == expected[name][stream]
                assert [d.seq for d in deliveries] == list(range(1, len(deliveries) + 1))
        for child in children:
            async with asyncio.timeout(10):
                assert await child.wait() == 0
        await asyncio.sleep(0.3)  # goodbyes arrive; nothing else may
        for name, sub in subs.items():
            assert await next_notice(sub, 0.05) is None, name
            assert sub.stats.gaps == sub.stats.silent_publishers == sub.stats.restarts == 0
    finally:
        for child in children:
            await reap(child)
        for sub in subs.values():
            await sub.close()


async def test_killed_publisher_is_silent_within_the_timeout_and_its_restart_is_no_gap(
    proxy: Proxy,
) -> None:
    timeout = 0.5
    sub = Subscriber(proxy.outside, prefixes=["co."], heartbeat_timeout=timeout, join_grace=10)
    await sub.start()
    children: list[asyncio.subprocess.Process] = []
    try:
        await until_subscribed(proxy.inside, [(sub, "co.probe")])
        first = await start_publisher(proxy.inside, "pacer-1", 50, ["co.lease"], "hang")
        children.append(first)
        await published(first)
        seqs: list[int] = []
        async with asyncio.timeout(5):
            while len(seqs) < 50:
                delivery = await sub.recv()
                if delivery.publisher_id == "pacer-1":
                    assert delivery.kind == "data"
                    seqs.extend([delivery.seq] * len(delivery.payloads))
        assert await next_notice(sub, 3 * timeout) is None  # alive: its heartbeats arrive
        loop = asyncio.get_running_loop()
        first.kill()
        killed_at = loop.time()
        notice = await next_notice(sub, 3.0)
        assert notice is not None
        assert (notice.kind, notice.publisher_id) == ("silent", "pacer-1")
        # heard last at most one heartbeat before the kill; one watch period of slack
        assert loop.time() - killed_at <= timeout + timeout / 10 + 0.15
        assert await next_notice(sub, 2 * timeout) is None  # reported once

        second = await start_publisher(proxy.inside, "pacer-1", 50, ["co.lease"], "close")
        children.append(second)
        restart = await next_notice(sub, 5.0)
        assert restart is not None
        assert (restart.kind, restart.publisher_id) == ("restart", "pacer-1")
        payloads: list[bytes] = []
        new_seqs: list[int] = []
        async with asyncio.timeout(5):
            while len(payloads) < 50:
                delivery = await sub.recv()
                assert delivery.kind == "data", delivery
                payloads.extend(delivery.payloads)
                new_seqs.append(delivery.seq)
        assert payloads == [payload("pacer-1", "co.lease", i) for i in range(50)]
        assert new_seqs == list(range(1, len(new_seqs) + 1))
        async with asyncio.timeout(10):
            assert await second.wait() == 0
        assert await next_notice(sub, 0.3) is None  # it closed: goodbye, not silence
        assert sub.stats.gaps == 0 and sub.stats.missed_payloads == 0
        assert sub.stats.restarts == 1 and sub.stats.silent_publishers == 1
    finally:
        for child in children:
            await reap(child)
        await sub.close()


async def test_proxy_restart_loses_nothing_silently() -> None:
    first = await Proxy.start()
    inside, outside = first.inside, first.outside
    sub = Subscriber(outside, prefixes=["co."], heartbeat_timeout=0.5, join_grace=10)
    await sub.start()
    pub = Publisher(inside, publisher_id="pacer", heartbeat_interval=0.05)
    second: Proxy | None = None
    stop = asyncio.Event()
    seen: list[Delivery] = []

    async def tick() -> None:
        for i in range(2_000):  # bounded: ~5 ms apart, until told to stop
            if stop.is_set():
                return
            pub.publish_now("co.ticks", b"%d" % i)
            await asyncio.sleep(0.005)

    async def consume() -> None:
        async for delivery in sub:  # ends when the subscriber is closed
            if delivery.publisher_id == "pacer":
                seen.append(delivery)

    def data_after_silence() -> int:
        kinds = [d.kind for d in seen]
        return kinds[kinds.index("silent") :].count("data") if "silent" in kinds else 0

    consumer: asyncio.Task[None] | None = None
    ticker: asyncio.Task[None] | None = None
    try:
        await until_subscribed(inside, [(sub, "co.probe")])
        consumer = asyncio.create_task(consume())
        await pub.start()
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.3)
        await first.kill()
        await asyncio.sleep(0.7)  # publisher and subscriber both cut off for longer than 0.5 s
        second = await Proxy.start(inside, outside)
        async with asyncio.timeout(10):
            while data_after_silence() < 20:  # noqa: ASYNC110 (the outage was noticed, and ended)
                await asyncio.sleep(0.05)
        stop.set()
        await ticker
        await pub.close()  # the goodbye carries the last seq: a lost tail is reported too
        await asyncio.sleep(0.5)
        received = [d.seq for d in seen if d.kind == "data"]
        reported = {s for d in seen if d.kind == "gap" for s in range(d.expected, d.seq)}
        last = pub.stats.sent_messages + pub.stats.dropped_payloads
        assert received == sorted(received)  # in order
        assert not set(received) & reported
        assert set(received) | reported == set(range(1, last + 1))  # nothing lost unreported
        assert [d.kind for d in seen].count("silent") == 1
    finally:
        stop.set()
        if ticker is not None:
            await ticker
        await pub.close()
        await sub.close()
        if consumer is not None:
            await consumer
        if second is not None:
            assert await second.stop() == 0
        await first.kill()


async def next_delivery(sub: Subscriber, timeout: float) -> Delivery | None:
    try:
        async with asyncio.timeout(timeout):
            return await sub.recv()
    except TimeoutError:
        return None


async def test_run_proxy_in_process_stops_on_its_event_or_when_cancelled() -> None:
    endpoints: list[tuple[str, str]] = []
    bound = asyncio.Event()

    def ready(inside: str, outside: str) -> None:
        endpoints.append((inside, outside))
        bound.set()

    stop = asyncio.Event()
    task = asyncio.create_task(run_proxy(ANY, ANY, stop=stop, on_ready=ready))
    async with asyncio.timeout(5):
        await bound.wait()
    inside, outside = endpoints[0]
    sub = Subscriber(outside, prefixes=["co."])
    await sub.start()
    try:
        await until_subscribed(inside, [(sub, "co.probe")])  # it forwards
    finally:
        await sub.close()
    stop.set()
    async with asyncio.timeout(5):
        await task
    bound.clear()
    task = asyncio.create_task(run_proxy(inside, outside, on_ready=ready))  # ports released
    async with asyncio.timeout(5):
        await bound.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert endpoints == [(inside, outside)] * 2


async def test_proxy_command_line_errors_exit_2_with_a_reason(proxy: Proxy) -> None:
    for argv in (
        ["--in", "http://nope", "--out", ANY],
        ["--in", proxy.inside, "--out", ANY],  # already bound by the running proxy
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleet.proxy",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(10):
            out, err = await process.communicate()
        assert process.returncode == 2
        assert out == b""
        assert err.decode().startswith("fleet.proxy: ")
        assert argv[1] in err.decode()


if __name__ == "__main__":
    sys.exit(asyncio.run(_child(sys.argv[1:])))
