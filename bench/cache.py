"""Cache: the L1 hit path, invalidation latency across processes, loads under a cold start.

    python -m bench cache

- L1 hit: ``Region.peek`` and ``Cache.peek`` on a warm key, next to ``dict.get`` on the same
  keys measured in the same run; printed as ns per lookup and as ratios (aim within 5x).
- Invalidation latency: this process invalidates keys one at a time through its own Cache; four
  worker processes holding them (through ``python -m fleet.proxy`` on loopback) note when each
  invalidation is applied. p50/p99 of (applied - sent), wall clock (aim p99 < 50 ms).
- Cold start: four worker processes get the same cold keys at the same moment; the loader
  counts its calls in memcached. Printed as loads per key (1.00 is the goal; without the lease
  it would be the number of processes).

Needs memcached on PATH (started here on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymemcache.client.base import Client

from cache.app import Cache
from cache.namespace import Loaded
from cache.settings import CacheSettings
from fleet.pg import free_port
from fleet.processes import MemcachedProcess
from fleet.settings import FleetSettings

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4
HIT_KEYS = 1000
HIT_LOOKUPS = 1_000_000
INVALIDATIONS = 300
INVALIDATION_GAP = 0.004  # seconds between two invalidations
COLD_KEYS = 500
STEP_TIMEOUT = 20.0


# -- L1 hit ---------------------------------------------------------------------------------------
def bench_hits() -> tuple[float, float, float]:
    """ns per lookup: dict.get, Region.peek, Cache.peek (warm keys, no I/O)."""

    async def run() -> tuple[float, float, float]:
        settings = dataclasses.replace(
            CacheSettings(), fleet=FleetSettings(memcached=""), bus=False
        )
        cache = Cache(settings)

        async def load(key: str) -> Loaded[int]:
            return Loaded(int(key))

        region = cache.register("hits", load, type=int, versioning="clock")
        await cache.start()
        keys = [str(i) for i in range(HIT_KEYS)]
        await cache.warm({"hits": keys})
        plain = {k: i for i, k in enumerate(keys)}
        loops = HIT_LOOKUPS // HIT_KEYS

        def timed(lookup: Any, *args: Any) -> float:
            def loop() -> None:
                for k in keys:
                    lookup(*args, k)

            best = min(timeit.repeat(loop, number=loops, repeat=5))
            return best / (loops * len(keys)) * 1e9

        try:
            base = timed(plain.get)
            region_ns = timed(region.peek)
            cache_ns = timed(cache.peek, "hits")
        finally:
            await cache.close()
        return base, region_ns, cache_ns

    return asyncio.run(run())


# -- processes ------------------------------------------------------------------------------------
class Child:
    """A worker process (this module with ``worker``): JSON lines out, commands in."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
        full_env.update(env)
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cache", "worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=full_env,
            cwd=ROOT,
            text=True,
            bufsize=1,
        )
        self.lines: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(json.loads(line))
                self._cv.notify_all()

    def wait_for(self, event: str, count: int = 1, timeout: float = STEP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while sum(1 for m in self.lines if m["event"] == event) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"worker: no {count} x {event!r}")
                self._cv.wait(remaining)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send("quit")
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@contextlib.contextmanager
def services() -> Iterator[tuple[tuple[str, int], str, str]]:
    """memcached and a bus proxy on free loopback ports."""
    memcached = MemcachedProcess(free_port())
    memcached.start()
    inside = f"tcp://127.0.0.1:{free_port()}"
    outside = f"tcp://127.0.0.1:{free_port()}"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "fleet.proxy", "--in", inside, "--out", outside],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        if not proxy.stdout.readline().startswith("ready"):
            raise RuntimeError("the bus proxy did not start")
        yield memcached.address, inside, outside
    finally:
        proxy.terminate()
        proxy.wait(timeout=5)
        if proxy.stdout is not None:
            proxy.stdout.close()
        memcached.stop()


def settings_for(memcached: tuple[str, int], inside: str, outside: str) -> CacheSettings:
    fleet = FleetSettings(
        memcached=f"{memcached[0]}:{memcached[1]}",
        coherence_bus_in=inside,
        coherence_bus_out=outside,
    )
    return dataclasses.replace(CacheSettings(), fleet=fleet, tick=0.02, heartbeat_timeout=2.0)


def env_for(memcached: tuple[str, int], inside: str, outside: str) -> dict[str, str]:
    return {
        "RTBFLEET_MEMCACHED": f"{memcached[0]}:{memcached[1]}",
        "RTBFLEET_COHERENCE_BUS_IN": inside,
        "RTBFLEET_COHERENCE_BUS_OUT": outside,
        "RTBFLEET_CACHE_TICK_SECONDS": "0.02",
        "RTBFLEET_CACHE_HEARTBEAT_TIMEOUT_SECONDS": "2",
        "RTBFLEET_LOG_LEVEL": "ERROR",
    }


# -- invalidation latency -------------------------------------------------------------------------
def bench_invalidation(memcached: tuple[str, int], inside: str, outside: str) -> list[float]:
    env = env_for(memcached, inside, outside)
    children = [Child(["watch", str(INVALIDATIONS)], env) for _ in range(WORKERS)]
    try:
        for child in children:
            child.wait_for("ready")

        async def invalidate() -> dict[str, float]:
            cache = Cache(settings_for(memcached, inside, outside))

            async def load(key: str) -> Loaded[str]:
                return Loaded(key)

            cache.register("bench", load, type=str, versioning="clock")
            await cache.start()
            sent: dict[str, float] = {}
            try:
                for i in range(INVALIDATIONS):
                    key = str(i)
                    sent[key] = time.time()
                    await cache.invalidate("bench", key)
                    await asyncio.sleep(INVALIDATION_GAP)
            finally:
                await cache.close()
            return sent

        sent = asyncio.run(invalidate())
        for child in children:
            child.wait_for("dropped", INVALIDATIONS)
        return [
            m["t"] - sent[m["key"]]
            for child in children
            for m in child.lines
            if m["event"] == "dropped"
        ]
    finally:
        for child in children:
            child.stop()


# -- cold start -----------------------------------------------------------------------------------
def bench_cold(memcached: tuple[str, int], inside: str, outside: str) -> tuple[float, int, float]:
    env = env_for(memcached, inside, outside)
    children = [Child(["cold", str(COLD_KEYS)], env) for _ in range(WORKERS)]
    try:
        for child in children:
            child.wait_for("ready")
        start = time.time() + 0.3
        for child in children:
            child.send(f"go {start}")
        for child in children:
            child.wait_for("done")
        client = Client(memcached)
        try:
            counts = client.get_many([f"bench-loads:{i}" for i in range(COLD_KEYS)])
        finally:
            client.close()
        loads = [int(v) for v in counts.values()]
        seconds = max(m["seconds"] for c in children for m in c.lines if m["event"] == "done")
        return sum(loads) / COLD_KEYS, max(loads, default=0), seconds
    finally:
        for child in children:
            child.stop()


def main() -> None:
    if not MemcachedProcess.available():
        print("cache: memcached is not installed; skipped")
        return
    base, region_ns, cache_ns = bench_hits()
    print("cache: L1 hit path (warm keys, 1M lookups, best of 5)")
    print(f"  dict.get (baseline)      : {base:7.1f} ns")
    print(f"  Region.peek              : {region_ns:7.1f} ns   ratio {region_ns / base:5.2f}")
    print(f"  Cache.peek(ns, key)      : {cache_ns:7.1f} ns   ratio {cache_ns / base:5.2f}")
    print("                             (aim: ratio within 5)")
    with services() as (memcached, inside, outside):
        latencies = sorted(bench_invalidation(memcached, inside, outside))
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
        print(
            f"cache: invalidation -> applied in {WORKERS} processes via the proxy "
            f"({len(latencies)} samples)"
        )
        print(f"  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {latencies[-1] * 1000:6.2f} ms")
        print("                             (aim: p99 < 50 ms)")
        per_key, worst, seconds = bench_cold(memcached, inside, outside)
        print(f"cache: cold start, {WORKERS} processes x {COLD_KEYS} keys at once")
        print(
            f"  loads per key {per_key:.2f} (max {worst}; without the lease: {WORKERS}.00)   "
            f"slowest process {seconds:.2f} s"
        )


# -- worker processes -----------------------------------------------------------------------------
def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def _worker(mode: str, keys: int) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "quit")

    threading.Thread(target=read, daemon=True).start()
    settings = CacheSettings.from_env(env_file=None)
    cache = Cache(settings)
    counter = Client(settings.fleet.memcached_servers[0])
    counter_lock = threading.Lock()  # a pymemcache client is not thread-safe

    def count(key: str) -> None:
        with counter_lock:
            counter.incr(f"bench-loads:{key}", 1, noreply=False)

    async def load(key: str) -> Loaded[str]:
        if mode == "cold":
            await asyncio.to_thread(count, key)
            await asyncio.sleep(0.002)
        return Loaded(key)

    region = cache.register("bench", load, type=str, versioning="clock")
    if mode == "cold":
        for i in range(keys):  # the counters exist before anyone loads
            counter.set(f"bench-loads:{i}", b"0", expire=600)
    else:

        def told(event: str, key: str, version: int) -> None:
            if event == "dropped":
                _emit(event="dropped", key=key, t=time.time())

        region.add_listener(told)
    await cache.start()
    try:
        if mode == "watch":
            await cache.warm({"bench": [str(i) for i in range(keys)]})
        _emit(event="ready")
        while True:
            command = await commands.get()
            if command == "quit":
                return
            if command.startswith("go "):
                await asyncio.sleep(max(0.0, float(command.split()[1]) - time.time()))
                t0 = time.monotonic()
                await asyncio.gather(*(cache.get("bench", str(i)) for i in range(keys)))
                _emit(event="done", seconds=time.monotonic() - t0)
    finally:
        await cache.close()
        counter.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        parser = argparse.ArgumentParser(prog="python -m bench.cache worker")
        parser.add_argument("mode", choices=["watch", "cold"])
        parser.add_argument("keys", type=int)
        options = parser.parse_args(sys.argv[2:])
        asyncio.run(_worker(options.mode, options.keys))
    else:
        main()
