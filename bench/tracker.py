"""Tracker throughput over HTTP: billing notices per second through one tracker process (the
fleet's HTTP core, ``Tracker.handle``, durable group commit into Postgres), against a trivial
handler on the same server in the same run.

    python -m bench tracker [--notices N] [--concurrency C] [--seconds S]
    python -m bench.tracker [...] [--batch-concurrency K] [--no-flush] [--commit-delay US]
    python -m bench.tracker [...] [--paced-rate R]   # the latency run at R notices/s
    RTBFLEET_BENCH_PROFILE=server.prof python -m bench.tracker [...]   # cProfile the server

An embedded Postgres in a temporary directory (synchronous commit on the tracker's connections),
the fleet's migrations, one campaign. Each notice is a distinct signed billing URL; a share of
them is sent twice, as exchanges do. One server process (uvloop) serves both paths:

- baseline: ``/trivial``, a route that parses the query string and answers 204;
- tracker: ``/bill`` (signature, price, dedupe row and spend in one group commit).

The client (this process) keeps ``C`` HTTP/1.1 keep-alive connections busy, one request at a
time on each. Then the tracker again at half its measured rate, paced, for its latency (p50,
p99). Prints notices/s and the ratio tracker / baseline; the client shares the machine with the
server, and figures on a loaded machine are rough. It also prints the server process's CPU time
per request on each path (from /proc): on a shared machine the steadier figure. The latency run
is an open loop (a new connection when all are waiting, up to 4,096): a machine that falls
behind the pace shows it as seconds of latency and notices not answered, counted on one line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fleet import signing
from fleet.db import migrate
from fleet.http import Request, Response
from fleet.pg import LocalPostgres
from fleet.processes import free_port, wait_for_port
from fleet.service import settle_heap
from fleet.settings import FleetSettings
from tracker.app import make_application, make_server
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


def trivial(request: Request) -> Response:
    parse_qsl(request.query)
    return Response(204)


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, query: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"GET {self.path}?{query} HTTP/1.1\r\nHost: tracker\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


MOST_CONNECTIONS = 4096  # past it a paced notice is not sent (counted): the client's own bound


class ClientBusy(Exception):
    """Every one of the driver's connections is waiting for an answer."""


def http_driver(
    port: int, path: str, connections: int, most: int = MOST_CONNECTIONS
) -> tuple[Driver, Callable[[], None]]:
    """A driver over a pool of keep-alive connections (a new one when all are busy, up to
    ``most``; then ``ClientBusy``). A connection that failed is closed, not used again."""
    idle = [Connection(port, path) for _ in range(connections)]
    every = set(idle)

    async def drive(query: str) -> int:
        if idle:
            conn = idle.pop()
        elif len(every) < most:
            conn = Connection(port, path)
            every.add(conn)
        else:
            raise ClientBusy(f"all {most} connections are waiting")
        try:
            status = await conn.send(query)
        except BaseException:
            conn.close()
            every.discard(conn)
            raise
        idle.append(conn)
        return status

    def close() -> None:
        for conn in every:
            conn.close()

    return drive, close


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far, from /proc (Linux);
    NaN where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def saturate(
    driver: Driver, queries: list[str], concurrency: int, seconds: float
) -> tuple[float, int]:
    """Notices per second with ``concurrency`` in flight, until done or ``seconds`` pass, and
    how many were answered."""
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
    return done / elapsed, done


async def paced(
    driver: Driver,
    queries: list[str],
    rate: float,
    seconds: float,
    failures: dict[str, int],
) -> tuple[list[float], list[float]]:
    """Latencies (s) of notices sent at ``rate`` per second, each on its own task, and how
    late (s) the client sent each one after its due time (the client's own lag)."""
    latencies: list[float] = []
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(query: str) -> None:
        started = time.perf_counter()
        try:
            await driver(query)
        except (OSError, asyncio.IncompleteReadError, ClientBusy) as exc:  # counted, once
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.perf_counter() - started)

    start = time.perf_counter()
    for i, query in enumerate(queries[: int(rate * seconds)]):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, time.perf_counter() - due))
        task = asyncio.create_task(one(query))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return latencies, lags


async def commit_figures(port: int) -> dict[str, float]:
    """The server's group-commit figures so far (its /metrics): commits, notices committed,
    seconds spent committing, and commits that took 100 ms or more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode("utf-8", "replace")
    writer.close()
    figures = {"commits": 0.0, "notices": 0.0, "seconds": 0.0, "slow": 0.0}
    for family in text_string_to_metric_families(text.partition("\r\n\r\n")[2]):
        for sample in family.samples:
            if sample.name == "tracker_batch_seconds_count":
                figures["commits"] = sample.value
            elif sample.name == "tracker_batch_seconds_sum":
                figures["seconds"] = sample.value
            elif sample.name == "tracker_batch_notices_sum":
                figures["notices"] = sample.value
            elif sample.name == "tracker_batch_seconds_bucket" and sample.labels["le"] == "0.05":
                figures["fast"] = sample.value
    figures["slow"] = figures["commits"] - figures.get("fast", 0.0)
    return figures


_WAITS = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'cpu') AS what, count(*) AS n
FROM pg_stat_activity
WHERE application_name = 'rtbfleet-tracker' AND state = 'active'
GROUP BY 1
"""


async def sample_waits(dsn: str, stop: asyncio.Event) -> dict[str, float]:
    """What the tracker's commits are doing, sampled every 5 ms until ``stop``: the mean
    number of its connections in a statement, by what they wait on (``Lock:transactionid``
    is a row lock held by another commit; ``LWLock:WALWrite`` another commit's WAL flush that
    covers this one too; ``IO:WALSync`` the flush itself; ``cpu`` no wait)."""
    conn = await asyncpg.connect(dsn)
    totals: dict[str, float] = {}
    samples = 0
    try:
        while not stop.is_set():
            for row in await conn.fetch(_WAITS):
                totals[row["what"]] = totals.get(row["what"], 0.0) + row["n"]
            samples += 1
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return {what: n / max(1, samples) for what, n in totals.items()}


async def serve(dsn: str, port: int, concurrency: int) -> None:
    """The server process: the tracker's routes and ``/trivial`` on one HttpServer."""
    registry = CollectorRegistry()
    settings = TrackerSettings(
        fleet=FleetSettings(signing_key=KEY),
        batch_concurrency=concurrency,
        pool_size=max(TrackerSettings.pool_size, concurrency + 2),
        spend_lanes=max(TrackerSettings.spend_lanes, concurrency),
    )
    service = TrackerService(settings, registry, publish_events=False, clock=lambda: NOW)
    await service.start(dsn)
    server = make_server(
        lambda: service.tracker,
        make_application(ready=lambda: True, registry=registry),
        settings.http,
        registry,
        lambda: NOW,
    )
    server.route("/trivial", trivial)
    await server.listen(port, "127.0.0.1")
    settle_heap()  # as the tracker process does once started
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await server.shutdown(2.0)
        await service.close()


async def run(args: argparse.Namespace, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SEED)
        if args.no_flush:  # this throwaway server only: what the disk's flushes cost
            await conn.execute("ALTER SYSTEM SET fsync = off")
        if args.commit_delay:  # a flush waits this long for other commits to share it
            await conn.execute(f"ALTER SYSTEM SET commit_delay = {int(args.commit_delay)}")
            await conn.execute(f"ALTER SYSTEM SET commit_siblings = {int(args.commit_siblings)}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    port = free_port()
    concurrency = args.batch_concurrency
    child = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "bench.tracker", "serve", dsn, str(port), str(concurrency)],
    )
    try:
        if not await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 60.0):
            raise RuntimeError("the tracker server did not start")
        c = args.concurrency
        drive, close_base = http_driver(port, "/trivial", c)
        trivial_queries = billing_queries(args.notices, "t")
        used = cpu_seconds(child.pid)
        base, answered = await saturate(drive, trivial_queries, c, args.seconds)
        base_cpu = (cpu_seconds(child.pid) - used) / answered
        close_base()
        drive, close_bill = http_driver(port, "/bill", c)
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_waits(dsn, stop_sampling))
        bill_queries = billing_queries(args.notices, "a")
        used = cpu_seconds(child.pid)
        rate, answered = await saturate(drive, bill_queries, c, args.seconds)
        bill_cpu = (cpu_seconds(child.pid) - used) / answered
        stop_sampling.set()
        waits = await sampler
        before = await commit_figures(port)
        failures: dict[str, int] = {}
        pace = args.paced_rate or rate / 2
        latencies, lags = await paced(
            drive, billing_queries(args.notices, "b"), pace, args.seconds, failures
        )
        after = await commit_figures(port)
        close_bill()
    finally:
        child.send_signal(signal.SIGTERM)
        await asyncio.to_thread(child.wait, 30)
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
    print(f"trivial handler     {base:>10,.0f} notices/s  (HTTP, {c} connections)")
    print(f"tracker (bill)      {rate:>10,.0f} notices/s  ratio {rate / base:.3f} of trivial")
    print(
        f"  server CPU per request: trivial {base_cpu * 1e6:.0f} us, bill {bill_cpu * 1e6:.0f} us"
        f" (trivial / bill {base_cpu / bill_cpu:.3f})"
    )
    print(f"tracker at {pace:,.0f}/s  p50 {p50:.1f} ms  p99 {p99:.1f} ms ({len(latencies)} sent)")
    if failures:  # the client's own limits (descriptors) or the server's connection cap
        print(
            "  paced run, not answered (the machine fell behind the pace): "
            + ", ".join(f"{name} {n}" for name, n in sorted(failures.items()))
        )
    busy = sorted(waits.items(), key=lambda item: -item[1])
    print(
        f"  Postgres, at full rate ({concurrency} commits in flight at most): connections in a "
        f"commit on average {sum(waits.values()):.2f}: "
        + ", ".join(f"{what} {n:.2f}" for what, n in busy if n >= 0.01)
    )
    if before["commits"]:
        print(
            f"  server, at full rate: {before['commits']:.0f} group commits of "
            f"{before['notices'] / before['commits']:.1f} notices, "
            f"{before['seconds'] / before['commits'] * 1000:.1f} ms each on average"
        )
    commits = after["commits"] - before["commits"]
    if commits:
        print(
            f"  server, at half rate: {commits:.0f} group commits of "
            f"{(after['notices'] - before['notices']) / commits:.1f} notices, "
            f"{(after['seconds'] - before['seconds']) / commits * 1000:.1f} ms each on average, "
            f"{after['slow'] - before['slow']:.0f} of 50 ms or more"
        )
    lags.sort()
    if lags:
        print(
            f"  client, at half rate: sent p50 {statistics.median(lags) * 1000:.1f} ms, "
            f"p99 {lags[int(len(lags) * 0.99) - 1] * 1000:.1f} ms after its due time"
        )
    print(f"counted: {rows} impressions, {spent} micros (each distinct notice once)")
    print("one server process; the client runs on the same machine (figures are rough)")


def main(argv: list[str] | None = None) -> None:
    if argv and argv[0] == "serve":  # the server process
        import uvloop

        profile = os.environ.get("RTBFLEET_BENCH_PROFILE", "")
        if not profile:
            uvloop.run(serve(argv[1], int(argv[2]), int(argv[3])))
            return
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            uvloop.run(serve(argv[1], int(argv[2]), int(argv[3])))
        finally:
            profiler.disable()
            profiler.dump_stats(profile)
        return
    parser = argparse.ArgumentParser(prog="python -m bench tracker")
    parser.add_argument("--notices", type=int, default=30_000)
    # Notices in flight, one per connection: a durable notice waits for its group commit (a WAL
    # flush, 15-35 ms on a shared disk), so with C in flight the rate cannot pass C / commit time
    # whatever the tracker's speed (Little's law; 256 capped it near 7,000-15,000/s). Exchanges
    # keep thousands of notices in flight; the trivial route is measured with the same C.
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        default=TrackerSettings.batch_concurrency,
        help="group commits in flight at once (RTBFLEET_TRACKER_BATCH_CONCURRENCY)",
    )
    parser.add_argument(
        "--no-flush",
        action="store_true",
        help="diagnosis only: the benchmark's own Postgres with fsync off (commits still "
        "synchronous, the WAL flush a no-op), to see what the disk's flushes cost",
    )
    parser.add_argument(
        "--commit-delay",
        type=int,
        default=0,
        help="Postgres commit_delay (microseconds) on the benchmark's own server: a WAL flush "
        "waits this long for other commits to join it (with --commit-siblings in flight)",
    )
    parser.add_argument("--commit-siblings", type=int, default=5)
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=0.0,
        help="the latency run's notices per second (default: half the measured full rate), "
        "to compare two builds at one pace",
    )
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
    main(sys.argv[1:])
