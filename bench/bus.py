"""Event bus throughput: batched BidEvents through a proxy vs. raw pyzmq PUB/SUB.

    python -m bench bus

Both runs carry the same pre-encoded ``fleet.events.BidEvent`` payloads (~200 bytes each) over
loopback TCP, publisher in a child process, subscriber in this one.

- baseline: one event per single-frame message, synchronous PUB -> SUB, direct connection.
- bus: ``fleet.bus.Publisher`` (batches per topic, 64 partitions) -> ``python -m fleet.proxy``
  -> ``fleet.bus.Subscriber`` (asyncio), every message sequenced and checked for gaps.

Prints events/s for each and the ratio bus / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time

import zmq

from fleet.bus import Publisher, Subscriber
from fleet.events import BidEvent, encode, topic_for

BASELINE_EVENTS = 400_000
BUS_EVENTS = 1_000_000
DISTINCT = 4096  # distinct payloads, cycled
RUN_TIMEOUT = 12.0  # seconds per run, at most
JOIN_WAIT = 0.5  # slow-joiner allowance for the raw PUB/SUB baseline


def sample_events(count: int = DISTINCT, seed: int = 7) -> list[tuple[str, bytes]]:
    """(topic, encoded BidEvent) pairs that look like a bidder's output."""
    rng = random.Random(seed)
    features = ["os=android", "os=ios", "country=USA", "country=DEU", "devtype=4", "dt=1"]
    events = []
    for i in range(count):
        event = BidEvent(
            txid=f"b{rng.randrange(16)}-{rng.getrandbits(32):08x}",
            ts=1_732_000_000 + i / 1000,
            imp_id="1",
            campaign_id=rng.randrange(1, 5000),
            creative_id=rng.randrange(1, 100_000),
            bid_cpm_micros=rng.randrange(100_000, 5_000_000),
            floor_cpm_micros=rng.randrange(0, 1_000_000),
            value_cpm_micros=rng.randrange(100_000, 9_000_000),
            p_click=rng.random() / 50,
            p_install=rng.random() / 20,
            auction_type=1,
            features=rng.sample(features, 2),
            model_version=17,
        )
        events.append((topic_for(event), encode(event)))
    return events


# -- children ------------------------------------------------------------------------------


def _raw_publisher(endpoint: str, count: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, count)
    sock.connect(endpoint)
    time.sleep(JOIN_WAIT)
    payloads = [payload for _, payload in sample_events()]
    n = len(payloads)
    send = sock.send
    for i in range(count):
        send(payloads[i % n])
    sock.close(linger=5_000)
    ctx.term()


async def _bus_publisher(endpoint: str, count: int) -> None:
    events = sample_events()
    n = len(events)
    publisher = Publisher(endpoint, publisher_id="bench", join_timeout=2.0, close_timeout=5.0)
    await publisher.start()
    publish = publisher.publish
    for i in range(count):
        topic, payload = events[i % n]
        publish(topic, payload)
        if i % 1024 == 1023:
            await asyncio.sleep(0)  # as a bidder would between requests
    await publisher.close()
    if publisher.stats.dropped_payloads:
        print(f"publisher dropped {publisher.stats.dropped_payloads}", file=sys.stderr)


def _argv(role: str, endpoint: str, count: int) -> list[str]:
    return [sys.executable, "-m", "bench.bus", role, endpoint, str(count)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- runs ----------------------------------------------------------------------------------


def run_baseline(count: int = BASELINE_EVENTS) -> tuple[float, int]:
    """(events/s, events received) of raw single-frame PUB/SUB."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, count)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVTIMEO, 1000)
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    child = subprocess.Popen(_argv("raw-pub", endpoint, count))
    received, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        recv = sock.recv
        while received < count and time.monotonic() < deadline:
            try:
                recv()
            except zmq.Again:
                continue
            if received == 0:
                first = time.perf_counter()
            received += 1
        last = time.perf_counter()
    finally:
        _stop(child)
        sock.close(linger=0)
        ctx.term()
    return (received - 1) / max(last - first, 1e-9), received


async def _bus_run(inside: str, outside: str, count: int) -> tuple[float, int, int]:
    subscriber = Subscriber(outside, prefixes=["ev."])
    await subscriber.start()
    child: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(0.2)  # our subscription reaches the proxy before the publisher joins
        child = await asyncio.create_subprocess_exec(*_argv("bus-pub", inside, count))
        received, first, last = 0, 0.0, 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_TIMEOUT
        while received < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                delivery = await asyncio.wait_for(subscriber.recv(), remaining)
            except TimeoutError:
                break
            if delivery.kind == "data":
                if received == 0:
                    first = time.perf_counter()
                received += len(delivery.payloads)
                last = time.perf_counter()
        return received / max(last - first, 1e-9), received, subscriber.stats.gaps
    finally:
        if child is not None:
            if child.returncode is None:
                child.terminate()
            await child.wait()
        await subscriber.close()


def run_bus(count: int = BUS_EVENTS) -> tuple[float, int, int]:
    """(events/s, events received, gaps) through Publisher -> proxy -> Subscriber."""
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet.proxy",
            "--in",
            "tcp://127.0.0.1:*",
            "--out",
            "tcp://127.0.0.1:*",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline().decode()  # "ready in=... out=...", or "" if it died
        if not line.startswith("ready "):
            raise RuntimeError("fleet.proxy did not start")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        return asyncio.run(_bus_run(fields["in"], fields["out"], count))
    finally:
        _stop(proxy)


def main() -> None:
    payload_bytes = sum(len(p) for _, p in sample_events()) / DISTINCT
    print(f"bus: BidEvent payloads, mean {payload_bytes:.0f} bytes, loopback TCP")
    base_rate, base_n = run_baseline()
    print(f"  baseline raw PUB/SUB, 1 event/message : {base_rate:>12,.0f} events/s ({base_n:,})")
    bus_rate, bus_n, gaps = run_bus()
    print(
        f"  fleet.bus batched via proxy             : {bus_rate:>12,.0f} events/s ({bus_n:,}, "
        f"{gaps} gaps)"
    )
    print(
        f"  ratio bus / baseline                    : {bus_rate / base_rate:>12.2f}  (aim >= 0.6)"
    )


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus")
    parser.add_argument("role", choices=["raw-pub", "bus-pub"])
    parser.add_argument("endpoint")
    parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.role == "raw-pub":
        _raw_publisher(args.endpoint, args.count)
    else:
        asyncio.run(_bus_publisher(args.endpoint, args.count))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _child_main(sys.argv[1:])
    else:
        main()
