"""A tracker process for the crash test: billing-notice query strings in on stdin, one a line;
``ack <txid>`` out on stdout once a notice is answered 204 (committed). Settings come from the
RTBFLEET_* environment; ``TRACKER_WORKER_NOW`` is the fleet time it answers at."""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry

from tracker.service import TrackerService
from tracker.settings import TrackerSettings


async def main() -> None:
    settings = TrackerSettings.from_env(env_file=None)
    now = float(os.environ["TRACKER_WORKER_NOW"])
    service = TrackerService(settings, CollectorRegistry(), publish_events=False)
    tracker = await service.start(settings.fleet.pg_dsn)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def one(query: str) -> None:
        response = await tracker.handle("GET", "/bill", query, {}, b"", now)
        if response.status == 204:
            txid = dict(parse_qsl(query))["txid"]
            sys.stdout.write(f"ack {txid}\n")
            sys.stdout.flush()

    print("ready", flush=True)
    while line := await reader.readline():
        task = asyncio.create_task(one(line.decode().strip()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    await service.close()


if __name__ == "__main__":
    asyncio.run(main())
