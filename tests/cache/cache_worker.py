"""A bidder-like process for the cache's multi-process tests and benchmark.

    python tests/cache/cache_worker.py --mode config|cold|watch [--keys N]

Settings come from RTBFLEET_* variables. It prints JSON lines on stdout (``ready`` first) and
takes commands on stdin: ``go <wall time>`` (cold: start the cold gets then), ``quit``.

- ``config``: the config snapshot namespace, warmed; prints ``seen`` with the wall time whenever
  campaign 1's name differs from the last one seen (peeked every millisecond, as a bidder would).
- ``cold``: namespace ``cold`` whose loader counts its calls per key in Postgres (``load_counts``)
  then takes 5 ms; on ``go`` it gets keys 0..N-1 all at once and prints ``done``.
- ``watch``: namespace ``bench`` (clock versions) warmed with keys 0..N-1; prints ``dropped`` with
  the wall time for each invalidation applied, and ``flushed`` for each namespace flush.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from typing import Any

import asyncpg

from cache.app import Cache
from cache.loaders import config_namespace
from cache.namespace import Loaded
from cache.settings import CacheSettings


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def stdin_commands(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, "quit")

    threading.Thread(target=read, daemon=True).start()
    return queue


async def run_config(cache: Cache, commands: asyncio.Queue[str]) -> None:
    last = ""

    def name() -> str:
        snap = cache.peek("config", "snapshot")
        if snap is None:
            return ""
        campaign = snap.campaign(1)
        return campaign.name if campaign is not None else ""

    last = name()
    emit(event="ready", name=last)
    while commands.empty():
        current = name()
        if current and current != last:
            last = current
            emit(event="seen", name=current, t=time.time())
        await asyncio.sleep(0.001)


async def run_cold(
    cache: Cache, pool: asyncpg.Pool, keys: int, commands: asyncio.Queue[str]
) -> None:
    async def load(key: str) -> Loaded[str]:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO load_counts (key, n) VALUES ($1, 1) "
                "ON CONFLICT (key) DO UPDATE SET n = load_counts.n + 1",
                key,
            )
        await asyncio.sleep(0.005)
        return Loaded(f"value-{key}")

    cache.register("cold", load, type=str, versioning="clock")
    emit(event="ready")
    command = await commands.get()
    if not command.startswith("go "):
        return
    await asyncio.sleep(max(0.0, float(command.split()[1]) - time.time()))
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(cache.get("cold", str(i)) for i in range(keys)), return_exceptions=True
    )
    wrong = [r for i, r in enumerate(results) if r != f"value-{i}"]
    region = cache.region("cold")
    emit(
        event="done",
        ok=keys - len(wrong),
        errors=[repr(w) for w in wrong[:5]],
        seconds=time.monotonic() - t0,
        l3=region.counts.l3_loads,
        l2=region.counts.l2_hits,
        contention=region.counts.lease_contention,
        l2_errors=cache._l2.errors if cache._l2 is not None else -1,
    )
    await commands.get()


async def run_watch(cache: Cache, keys: int, commands: asyncio.Queue[str]) -> None:
    async def load(key: str) -> Loaded[str]:
        return Loaded(f"value-{key}")

    region = cache.register("bench", load, type=str, versioning="clock")

    def told(event: str, key: str, version: int) -> None:
        if event in ("dropped", "flushed"):
            emit(event=event, key=key, version=version, t=time.time())

    region.add_listener(told)
    await cache.warm({"bench": [str(i) for i in range(keys)]})
    emit(event="ready", held=len(region.store))
    while True:
        command = await commands.get()
        if command == "quit":
            return
        if command == "count":
            emit(event="count", held=len(region.store))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("config", "cold", "watch"), required=True)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    settings = CacheSettings.from_env(env_file=None)
    commands = stdin_commands(asyncio.get_running_loop())
    pool: asyncpg.Pool | None = None
    if settings.fleet.pg_dsn:
        pool = await asyncpg.create_pool(settings.fleet.pg_dsn, min_size=1, max_size=4)
    cache = Cache(settings)
    try:
        if args.mode == "config":
            assert pool is not None
            cache.register(config_namespace(pool))
            await cache.start()
            await cache.warm()
            await run_config(cache, commands)
        elif args.mode == "cold":
            assert pool is not None
            await cache.start()
            await run_cold(cache, pool, args.keys, commands)
        else:
            await cache.start()
            await run_watch(cache, args.keys, commands)
    finally:
        await cache.close()
        if pool is not None:
            await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
