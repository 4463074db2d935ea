"""Tracker throughput: billing notices per second through the tracker's handler with durable
group commit into Postgres, against a trivial handler driven the same way in the same run.

    python -m bench tracker [--notices N] [--concurrency C] [--seconds S]

An embedded Postgres in a temporary directory (synchronous commit on the tracker's connections),
the fleet's migrations, one campaign. Each notice is a distinct signed billing URL; a share of
them is sent twice, as exchanges do. Both runs go through the same in-process driver:

- baseline: a trivial handler that parses the query string and answers 204;
- tracker: ``Tracker.handle`` (signature, price, dedupe row and spend in one group commit).

Then the tracker again at half its measured rate, paced, for its latency (p50, p99).

The driver calls the handler directly: the tracker's HTTP mounting comes with the shared HTTP
server core, and ``Driver`` is where an HTTP client driving a real port goes then (the same
numbers, with the HTTP layer on both sides of the ratio). Prints notices/s and the ratio
tracker / baseline; figures on a loaded machine are rough.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
from prometheus_client import CollectorRegistry

from fleet import signing
from fleet.db import migrate
from fleet.pg import LocalPostgres
from tracker.service import TrackerService
from tracker.settings import TrackerSettings

KEY = "bench-signing-key-0123456789abcdef"
NOW = 1_800_000_000.0
DUPLICATE_EVERY = 300  # about 0.3 % sent twice

Driver = Callable[[str], Awaitable[int]]  # a billing query string in, the HTTP status out

SEED = """
INSERT INTO advertisers (id, name, domain) VALUES (1, 'Bench', 'bench.example');
INSERT INTO campaigns (id, advertiser_id, name, goal_type, goal_price_micros, max_bid_cpm_micros,
                       daily_budget_micros, total_budget_micros)
VALUES (1, 1, 'bench', 'CPM', 1000000, 5000000, 0, 0);
INSERT INTO creatives (id, campaign_id, format, w, h, markup, adomain)
VALUES (1, 1, 'banner', 300, 250, '<img src="${IMP_URL}">', '{bench.example}');
"""


def billing_queries(count: int, prefix: str) -> list[str]:
    signer = signing.Signer(KEY.encode())
    queries = []
    for i in range(count):
        url = signer.bid_notice_urls(
            "http://tracker",
            ("bill",),
            txid=f"{prefix}{i}:1:bench-0",
            campaign_id=1,
            creative_id=1,
            price=3_000_000,
            currency="USD",
            timestamp=int(NOW),
            expires=int(NOW) + 3600,
        )["bill"].replace("${AUCTION_PRICE}", "2.5")
        queries.append(urlsplit(url).query)
        if i % DUPLICATE_EVERY == 0:
            queries.append(queries[-1])
    return queries


async def trivial(query: str) -> int:
    parse_qsl(query)
    return 204


async def saturate(driver: Driver, queries: list[str], concurrency: int, seconds: float) -> float:
    """Notices per second with ``concurrency`` in flight, until done or ``seconds`` pass."""
    position = 0
    done = 0
    deadline = time.perf_counter() + seconds
    statuses: dict[int, int] = {}

    async def worker() -> None:
        nonlocal position, done
        while position < len(queries) and time.perf_counter() < deadline:
            query = queries[position]
            position += 1
            status = await driver(query)
            statuses[status] = statuses.get(status, 0) + 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if set(statuses) != {204}:
        raise RuntimeError(f"unexpected answers: {statuses}")
    return done / elapsed


async def paced(driver: Driver, queries: list[str], rate: float, seconds: float) -> list[float]:
    """Latencies (s) of notices sent at ``rate`` per second, each on its own task."""
    latencies: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(query: str) -> None:
        started = time.perf_counter()
        await driver(query)
        latencies.append(time.perf_counter() - started)

    start = time.perf_counter()
    for i, query in enumerate(queries[: int(rate * seconds)]):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(query))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return latencies


async def run(args: argparse.Namespace, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SEED)
    finally:
        await conn.close()
    settings = TrackerSettings(signing_key=KEY)
    service = TrackerService(settings, CollectorRegistry(), publish_events=False)
    tracker = await service.start(dsn)

    async def tracked(query: str) -> int:
        return (await tracker.handle("GET", "/bill", query, {}, b"", NOW)).status

    try:
        base = await saturate(
            trivial, billing_queries(args.notices, "t"), args.concurrency, args.seconds
        )
        rate = await saturate(
            tracked, billing_queries(args.notices, "a"), args.concurrency, args.seconds
        )
        latencies = await paced(tracked, billing_queries(args.notices, "b"), rate / 2, args.seconds)
    finally:
        await service.close()
    conn = await asyncpg.connect(dsn)
    try:
        rows, spent = await conn.fetchrow(
            "SELECT sum(impressions), sum(spent_micros) FROM campaign_spend"
        )
    finally:
        await conn.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    print(f"trivial handler     {base:>10,.0f} notices/s")
    print(f"tracker (bill)      {rate:>10,.0f} notices/s  ratio {rate / base:.3f} of trivial")
    print(
        f"tracker at {rate / 2:,.0f}/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms ({len(latencies)} sent)"
    )
    print(f"counted: {rows} impressions, {spent} micros (each distinct notice once)")
    print("in-process driver: the HTTP layer joins both sides once the tracker is mounted")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench tracker")
    parser.add_argument("--notices", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv or [])
    work = Path(tempfile.mkdtemp(prefix="rtbfleet-bench-tracker-"))
    work.chmod(0o755)
    server = LocalPostgres(work)
    try:
        dsn = server.start()
        asyncio.run(migrate(dsn))
        asyncio.run(run(args, dsn))
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
