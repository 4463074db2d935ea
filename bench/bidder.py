"""The bidder against three JSON echoes, with the same load generator and request mix.

One bidder process (``python -m bidder``) with a generated portfolio of 200 campaigns and 1,000
creatives and a hashed linear model of 2**20 non-zero weights per head; the baselines (bench/
_echo.py) parse the JSON body and write it back, on uvloop: a ``tornado.web.Application``, a
bare Tornado ``HTTPServerConnectionDelegate``, and a raw asyncio protocol with httptools. The load
generator is a separate process (raw asyncio protocol on uvloop, keep-alive connections; closed
loop for maximum throughput, open loop at a fixed offered rate); its own capacity is measured
against a trivial server first, to show it is not the bottleneck. Prints:

- throughput: bidder / each echo (aim >= 0.7 against the Application echo), and the same
  requests sent as a crawler (refused after decoding): the HTTP core without the auction,
  against the raw httptools echo (aim >= 0.8). Every server runs at once and is measured in
  turn (closed loop), three rounds: the ratios are of neighbours in time, their median and
  range printed, since a machine shared with others changes speed during a run;
- with ``--compare DIR`` (a source tree of another version, e.g. ``git archive main``), that
  version's bidder in the same run: this one / that one;
- latency p50/p99 at half the bidder's maximum rate (aim p99 < 10 ms);
- at twice the maximum offered rate with shedding on: answers after tmax (must be 0) and
  goodput (requests fully served, from the bidder's own metrics) against the maximum
  (aim >= 80 %);
- the bidder's resident memory (aim < 250 MiB);
- a scaling table over portfolio sizes (default 200, 2,000 and 20,000 campaigns of 5
  creatives; ``bench/_scale.py``): maximum, p99 at half load, resident memory and the time to
  apply a one-campaign change, with the same request mix and baselines.

Run: ``python -m bench bidder`` (a few minutes), ``python -m bench.bidder --compare DIR``,
or ``python -m bench.bidder --campaigns 200,2000`` for other sizes (``--campaigns 0`` skips
the table); ``python -m bench.bidder --echoes`` measures only the echoes (the HTTP core
against the raw httptools echo, about half a minute).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httptools

from bench import _echo
from bench._scale import one_campaign_changes, print_table, scaling_table
from fleet.processes import free_port, wait_for_port
from sim import vocabulary as vocab

PHASE_S = 5.0
WARMUP_S = 1.5
CONNECTIONS = 8  # closed loop: keeps one server core busy without long queues
OPEN_CONNECTIONS = 256
SIGNING_KEY = "bench-signing-key-0123456789abcdef"
SIZES = (200, 2000, 20000)  # campaigns in the scaling table


# -- the request mix ----------------------------------------------------------------------------


def request_mix(count: int, seed: int = 11) -> list[tuple[bytes, int]]:
    """(body, tmax ms) of realistic OpenRTB 2.6 requests (1-3 KB): banner, video and native,
    app and site, floors in USD/EUR/GBP, user segments, consent signals, supply chain."""
    rng = random.Random(seed)

    def pick(weights: dict[Any, float]) -> Any:
        return rng.choices(list(weights), weights=list(weights.values()))[0]

    out = []
    for n in range(count):
        country = pick(vocab.COUNTRIES)
        os_name = pick(vocab.OPERATING_SYSTEMS)
        kind = rng.choices(("banner", "video", "native"), weights=(0.7, 0.2, 0.1))[0]
        imp: dict[str, Any] = {
            "id": "1",
            "bidfloor": round(rng.uniform(0.05, 1.5), 2),
            "bidfloorcur": vocab.COUNTRY_CURRENCY.get(country, "USD"),
            "secure": 1,
            "tagid": f"slot-{rng.randint(1, 50)}",
        }
        if kind == "banner":
            size = rng.choice(vocab.BANNER_SIZES)
            w, h = (int(x) for x in size.split("x"))
            imp["banner"] = {"w": w, "h": h, "format": [{"w": w, "h": h}], "pos": 1, "api": [3, 5]}
        elif kind == "video":
            w, h = (int(x) for x in rng.choice(vocab.VIDEO_SIZES).split("x"))
            imp["video"] = {
                "mimes": list(vocab.VIDEO_MIMES),
                "w": w,
                "h": h,
                "minduration": 5,
                "maxduration": 30,
                "protocols": [2, 3, 5, 6],
                "linearity": 1,
            }
        else:
            imp["native"] = {
                "ver": "1.2",
                "request": json.dumps(
                    {
                        "ver": "1.2",
                        "assets": [
                            {"id": 1, "required": 1, "title": {"len": 90}},
                            {"id": 2, "required": 1, "img": {"type": 3, "w": 1200, "h": 627}},
                        ],
                    }
                ),
            }
        req: dict[str, Any] = {
            "id": f"bench-{seed}-{n}",
            "at": rng.choices((1, 2), weights=(0.6, 0.4))[0],
            "tmax": rng.choice((80, 100, 100, 120, 150, 200)),
            "cur": ["USD"],
            "imp": [imp],
            "device": {
                "ua": f"Mozilla/5.0 ({os_name}) AppleWebKit/537.36 (KHTML, like Gecko) Mobile",
                "ip": f"198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "os": os_name,
                "devicetype": pick(vocab.DEVICE_TYPES),
                "connectiontype": pick(vocab.CONNECTION_TYPES),
                "ifa": f"{rng.getrandbits(128):032x}",
                "geo": {"country": country, "type": 2},
                "language": "en",
            },
            "user": {
                "id": f"u{rng.randint(1, 10**6)}",
                "data": [
                    {
                        "id": "dmp",
                        "segment": [{"id": s} for s in rng.sample(vocab.USER_SEGMENTS, 3)],
                    }
                ],
            },
            "regs": {"coppa": 0, "gdpr": 0},
            "source": {
                "tid": f"t{n}",
                "schain": {
                    "complete": 1,
                    "ver": "1.0",
                    "nodes": [
                        {"asi": "exchange.example", "sid": f"p{rng.randint(1, 99)}", "hp": 1}
                    ],
                },
            },
            "bcat": list(vocab.SENSITIVE_CATEGORIES[:2]),
        }
        if rng.random() < 0.6:
            bundle = rng.choice(vocab.APP_BUNDLES)
            req["app"] = {
                "id": bundle,
                "bundle": bundle,
                "cat": [rng.choice(vocab.IAB_CATEGORIES)],
                "publisher": {"id": f"pub-{rng.randint(1, 40)}"},
            }
        else:
            domain = rng.choice(vocab.SITE_DOMAINS)
            req["site"] = {
                "id": domain,
                "domain": domain,
                "page": f"https://{domain}/a/{n}",
                "cat": [rng.choice(vocab.IAB_CATEGORIES)],
                "publisher": {"id": f"pub-{rng.randint(1, 40)}"},
            }
        out.append((json.dumps(req).encode(), int(req["tmax"])))
    return out


def _as_crawlers(requests: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """The same requests from a crawler: refused by the first traffic filter, so that what is
    measured is the HTTP path, the JSON decode and the events, not the auction."""
    out = []
    for body, tmax in requests:
        req = json.loads(body)
        req["device"]["ua"] = (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
        )
        out.append((json.dumps(req).encode(), tmax))
    return out


def _http(body: bytes) -> bytes:
    return (
        b"POST /openrtb2/bid HTTP/1.1\r\nHost: bidder\r\nContent-Type: application/json\r\n"
        b"x-openrtb-version: 2.6\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


# -- the load generator (its own process) -------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection of the generator; answers framed by llhttp."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.sent_at = 0.0
        self.tmax = 0.0
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abort()

    def on_message_complete(self) -> None:
        self.gen.answered(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class _Generator:
    def __init__(self, port: int, requests: list[tuple[bytes, int]]) -> None:
        self.port = port
        self.use(requests)
        self.idle: list[_Client] = []
        self.queue: deque[None] = deque()
        self.closed_loop = False
        self.counting = False
        self.stopped = False
        self.failed_reconnects = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.answers = 0  # every answer this generator got, warm-up included
        self.reset()

    def reset(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.late = 0
        self.dropped = 0
        self.sent = 0
        self.queued_max = 0
        self.own_lag = 0.0
        self.late_by: list[float] = []

    def use(self, requests: list[tuple[bytes, int]]) -> None:
        self.requests = [(_http(body), tmax / 1000.0) for body, tmax in requests]
        self.next = 0

    async def connect(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, client = await loop.create_connection(lambda: _Client(self), "127.0.0.1", self.port)
            if self.closed_loop:
                self.send(client)  # a replaced connection rejoins the loop
            else:
                self.idle.append(client)

    def send(self, client: _Client) -> None:
        data, tmax = self.requests[self.next]
        self.next = (self.next + 1) % len(self.requests)
        client.busy, client.tmax, client.sent_at = True, tmax, time.perf_counter()
        client.transport.write(data)
        self.sent += 1

    def answered(self, client: _Client, status: int) -> None:
        self.answers += 1
        latency = time.perf_counter() - client.sent_at
        client.busy = False
        if self.counting:
            self.latencies.append(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if latency > client.tmax:
                self.late += 1
                self.late_by.append(latency - client.tmax)
        if self.closed_loop:
            self.send(client)
        elif self.queue:
            self.queue.popleft()
            self.send(client)
        else:
            self.idle.append(client)

    def lost(self, client: _Client) -> None:
        if client in self.idle:
            self.idle.remove(client)
        if client.busy and self.counting:
            self.dropped += 1  # closed unanswered: the bidder's answer to "past tmax"
        client.busy = False
        if not self.stopped:
            task = asyncio.get_running_loop().create_task(self.connect(1))
            self.tasks.add(task)
            task.add_done_callback(self._reconnected)

    def _reconnected(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failed_reconnects += 1

    def stop(self) -> None:
        self.stopped = True
        for client in self.idle:
            client.transport.close()
        self.idle.clear()

    async def closed(self, warmup: float, duration: float) -> dict[str, Any]:
        self.closed_loop = True
        for client in list(self.idle):
            self.idle.remove(client)
            self.send(client)
        await asyncio.sleep(warmup)
        self.reset()
        self.counting = True
        await asyncio.sleep(duration)
        self.counting = False
        self.closed_loop = False
        await asyncio.sleep(0.3)  # let the last answers come home
        return self.stats(duration)

    async def open(self, rate: float, warmup: float, duration: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        due_total = 0
        counting_from = start + warmup
        while (now := loop.time()) < counting_from + duration:
            if not self.counting and now >= counting_from:
                self.reset()
                self.counting = True
            due = int((now - start) * rate) - due_total
            due_total += due
            for _ in range(due):
                if self.idle:
                    self.send(self.idle.pop())
                else:
                    self.queue.append(None)
            self.queued_max = max(self.queued_max, len(self.queue))
            slept = time.perf_counter()
            await asyncio.sleep(0.0005)
            if self.counting:  # the generator's own lag: answers it reads late are its fault
                self.own_lag = max(self.own_lag, time.perf_counter() - slept - 0.001)
        self.counting = False
        self.queue.clear()
        await asyncio.sleep(0.5)
        return self.stats(duration)

    def stats(self, duration: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

        return {
            "rate": len(lat) / duration,
            "answers": self.answers,
            "sent": self.sent,
            "statuses": self.statuses,
            "late": self.late,
            "dropped": self.dropped,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan"),
            "queued_max": self.queued_max,
            "own_lag_ms": self.own_lag * 1000,
            "late_by_max_ms": max(self.late_by, default=0.0) * 1000,
        }


def _loadgen(conn: Connection, mixes: dict[str, list[tuple[bytes, int]]]) -> None:
    """Commands: ("closed" | "open", port, connections, *args), ("use", mix), ("stop",)."""
    import uvloop

    async def run() -> None:
        gen: _Generator | None = None
        requests = mixes["real"]
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "stop":
                return
            if command[0] == "use":
                requests = mixes[command[1]]
                if gen is not None:
                    gen.use(requests)
                conn.send(None)
                continue
            kind, port, connections, *args = command
            if gen is None or gen.port != port:
                if gen is not None:
                    gen.stop()
                gen = _Generator(port, requests)
                await gen.connect(connections)
            elif len(gen.idle) < connections:
                await gen.connect(connections - len(gen.idle))
            result = await (gen.closed(*args) if kind == "closed" else gen.open(*args))
            conn.send(result)

    uvloop.run(run())


# -- the run ------------------------------------------------------------------------------------


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s")


def _wait_port(port: int, timeout: float = 20.0) -> None:
    if not wait_for_port("127.0.0.1", port, timeout):
        raise RuntimeError(f"nothing listens on port {port}")


def _outcomes(port: int) -> dict[str, float]:
    """The bidder's request counters by outcome (all reasons summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bidder_requests_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            totals[outcome] = totals.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def _served_share(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    total = max(1.0, sum(delta.values()))
    shed, late = delta.get("shed", 0.0), delta.get("late", 0.0)
    return {"served": (total - shed - late) / total, "shed": shed / total, "late": late / total}


def _cpu_times(pid: int) -> tuple[float, float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one, wall time) of a process."""
    run, wait, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(run) / 1e9, int(wait) / 1e9, time.monotonic()


def _cpu_share(before: tuple[float, float, float], pid: int) -> dict[str, float]:
    run, wait, wall = _cpu_times(pid)
    span = max(1e-9, wall - before[2])
    return {"on_cpu": (run - before[0]) / span, "waiting": (wait - before[1]) / span}


def _rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def _generate(campaigns: int) -> dict[str, Any]:
    from sim.portfolio import generate

    return generate(campaigns, seed=5, creatives_per_campaign=5)


def _portfolio_and_model(directory: Path) -> tuple[Path, Path, int, int]:
    import numpy as np

    from bidder.scoring import HashedLinearModel

    doc = _generate(200)
    portfolio = directory / "portfolio.json"
    portfolio.write_text(json.dumps(doc))
    rng = np.random.default_rng(3)
    size = 1 << 20
    click = (rng.standard_normal(size) * 0.05).astype(np.float32)
    install = (rng.standard_normal(size) * 0.05).astype(np.float32)
    click[click == 0] = 1e-6
    install[install == 0] = 1e-6
    model = HashedLinearModel(click, install, -4.6, -3.5, bits=20, version=1)
    model_path = directory / "model.bin"
    model_path.write_bytes(model.to_bytes())
    creatives = sum(len(c["creatives"]) for c in doc["campaigns"])
    return portfolio, model_path, len(doc["campaigns"]), creatives


ECHOES = (
    ("tornado_app", "Tornado Application + RequestHandler echo"),
    ("tornado_delegate", "bare Tornado HTTPServerConnectionDelegate echo"),
    ("raw", "raw uvloop + httptools echo"),
    ("core", "the HTTP core's echo (fleet/http route)"),
)


ROUNDS = 3
ROUND_S = 2.5


def main(argv: list[str] | None = None) -> None:
    """``--compare DIR``: also measure the bidder of another source tree (e.g. an export of
    the main branch) in the same run, with the same generator and requests."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bidder")
    parser.add_argument("--compare", type=Path, default=None, help="another source tree")
    parser.add_argument(
        "--echoes", action="store_true", help="only the echoes: the HTTP core against raw httptools"
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="rounds of the interleaved measurements"
    )
    parser.add_argument(
        "--campaigns",
        default=",".join(map(str, SIZES)),
        help="portfolio sizes of the scaling table, comma separated (0: no table)",
    )
    args = parser.parse_args([] if argv is None else argv)  # None: run by `python -m bench`
    compare: Path | None = args.compare
    echoes_only: bool = args.echoes
    n_rounds: int = max(1, args.rounds)
    try:
        portfolios = [int(x) for x in args.campaigns.split(",") if int(x) > 0]
    except ValueError:
        parser.error(f"--campaigns takes integers separated by commas, not {args.campaigns!r}")
    ctx = mp.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="rtbfleet-bench-bidder-"))
    requests = request_mix(3000)
    sizes = sorted(len(body) for body, _ in requests)
    portfolio, model, n_campaigns, n_creatives = _portfolio_and_model(work)
    print(
        f"bidder bench: 1 server process, {n_campaigns} campaigns, {n_creatives} creatives, "
        f"model 2x2^20 non-zero weights; {len(requests)} distinct requests, median "
        f"{sizes[len(sizes) // 2]} B; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores before the run"
    )
    parent, child = ctx.Pipe()
    mixes = {"real": requests, "crawler": _as_crawlers(requests)}
    loadgen = ctx.Process(target=_loadgen, args=(child, mixes), daemon=True)
    loadgen.start()
    servers: list[Any] = []
    bidders: list[_Bidder] = []

    def drive(*command: Any) -> Any:
        parent.send(command)
        return parent.recv()

    def serve(name: str) -> int:
        port = free_port()
        servers.append(ctx.Process(target=_echo.SERVERS[name], args=(port,), daemon=True))
        servers[-1].start()
        _wait_port(port)
        return port

    try:
        ceiling = drive("closed", serve("trivial"), CONNECTIONS, 0.5, 3.0)
        # Every server up at once, measured in turn, round after round: a machine shared with
        # others changes speed over a run, and a ratio of neighbours in time suffers least.
        targets = [(name, serve(name), "real") for name, _ in ECHOES]
        pids = {name: servers[i + 1].pid for i, (name, _) in enumerate(ECHOES)}
        ports = {name: port for name, port, _ in targets}
        _same_answers(ports["raw"], ports["core"], requests[:200])
        print("the raw and the core echo answer the first 200 requests alike, byte for byte")
        if echoes_only:
            rounds = _rounds(drive, targets, pids, n_rounds)
            _report_echoes(ceiling, rounds)
            return
        bidders.append(_Bidder(work, portfolio, model, shed=False))
        targets += [("bidder", bidders[0].port, "real"), ("http", bidders[0].port, "crawler")]
        if compare is not None:
            bidders.append(_Bidder(work, portfolio, model, shed=False, tree=compare))
            targets += [("old", bidders[1].port, "real"), ("old_http", bidders[1].port, "crawler")]
        pids.update(bidder=bidders[0].proc.pid, http=bidders[0].proc.pid)
        if compare is not None:
            pids.update(old=bidders[1].proc.pid, old_http=bidders[1].proc.pid)
        rounds = _rounds(drive, targets, pids, n_rounds)
        drive("use", "real")
        for bidder in bidders:
            bidder.stop()
        bidders.clear()
        for server in servers:
            server.terminate()
        max_rate = statistics.median(r["bidder"] for r in rounds)
        result = _run_bidder(work, portfolio, model, drive, max_rate)
        _report(ceiling, rounds, result, compare)
        sys.stdout.flush()
        # The bidder at each portfolio size, with the same request mix, model and baseline.
        rows = scaling_table(
            work,
            portfolios,
            partial(_measure_sizes, work, model=model, drive=drive, n_rounds=n_rounds),
            _generate,
        )
        if rows:
            print_table(rows, statistics.median(r["tornado_app"] for r in rounds))
    finally:
        parent.send(("stop",))
        loadgen.join(5)
        for server in servers:
            server.terminate()
        for bidder in bidders:
            bidder.stop()


def _answers(port: int, requests: list[tuple[bytes, int]]) -> list[bytes]:
    """The bytes a server answers to ``requests``, in turn on one keep-alive connection
    (each answer's end found by llhttp)."""
    done: list[bool] = []

    class _Answer:
        def on_message_complete(self) -> None:
            done.append(True)

    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for body, _ in requests:
            sock.sendall(_http(body))
            parser, data = httptools.HttpResponseParser(_Answer()), b""
            done.clear()
            while not done:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"the server on port {port} closed the connection")
                data += chunk
                parser.feed_data(chunk)
            out.append(data)
    return out


def _same_answers(raw: int, core: int, requests: list[tuple[bytes, int]]) -> None:
    """The raw echo and the HTTP core's echo must do the same work: the same answers, byte for
    byte (status line, headers, JSON body), on a keep-alive connection."""
    for i, (a, b) in enumerate(zip(_answers(raw, requests), _answers(core, requests), strict=True)):
        if a != b:
            raise RuntimeError(f"the raw and the core echo answer request {i} differently: "
                               f"{a[:160]!r} / {b[:160]!r}")  # fmt: skip


def _best_of_two(drive: Callable[..., dict[str, Any]], port: int) -> dict[str, Any]:
    """Closed loop, the better of two windows: a maximum, on a machine shared with others."""
    first = drive("closed", port, CONNECTIONS, WARMUP_S, PHASE_S)
    second = drive("closed", port, CONNECTIONS, 0.2, PHASE_S)
    return max(first, second, key=lambda r: float(r["rate"]))


def _measure_sizes(
    work: Path,
    portfolios: list[Path],
    model: Path,
    drive: Callable[..., dict[str, Any]],
    n_rounds: int,
) -> list[dict[str, Any]]:
    """Every size's bidder up at once, measured in turn round after round (maximum and CPU
    per answer), then each alone: half-load latency, resident memory, one-campaign changes."""
    bidders: list[_Bidder] = []
    try:
        for i, path in enumerate(portfolios):
            bidders.append(_Bidder(work, path, model, shed=False, name=f"size{i}"))
        for bidder in bidders:  # warm: the memos of the mix, the allocator
            drive("closed", bidder.port, CONNECTIONS, WARMUP_S, ROUND_S)
        rates: list[list[float]] = [[] for _ in bidders]
        cpu: list[list[float]] = [[] for _ in bidders]
        for _ in range(n_rounds):
            for i, bidder in enumerate(bidders):
                before, used = _outcomes(bidder.port), _cpu_times(bidder.proc.pid)
                got = drive("closed", bidder.port, CONNECTIONS, 0.5, ROUND_S)
                served = _served_share(before, _outcomes(bidder.port))["served"]
                rates[i].append(float(got["rate"]) * served)
                spent = _cpu_times(bidder.proc.pid)[0] - used[0]
                cpu[i].append(spent / max(1, got["answers"]))
        rows = []
        for i, (path, bidder) in enumerate(zip(portfolios, bidders, strict=True)):
            max_rate = statistics.median(rates[i])
            half = drive("open", bidder.port, OPEN_CONNECTIONS, max_rate / 2, WARMUP_S, PHASE_S)
            rss, _ = _rss_mib(bidder.proc.pid)
            changes = one_campaign_changes(path, json.loads(path.read_text()), bidder.port)
            rows.append(
                {
                    "max_rate": max_rate,
                    "rates": rates[i],
                    "cpu": cpu[i],
                    "p50_ms": half["p50_ms"],
                    "p99_ms": half["p99_ms"],
                    "rss": rss,
                    "changes": changes,
                }
            )
        return rows
    finally:
        for bidder in bidders:
            bidder.stop()


def _rounds(
    drive: Callable[..., Any],
    targets: list[tuple[str, int, str]],
    pids: dict[str, int],
    n_rounds: int = ROUNDS,
) -> list[dict[str, float]]:
    """Every target measured in turn (closed loop), ``n_rounds`` times: throughput and the server
    process's CPU time per answer."""
    rounds: list[dict[str, float]] = []
    for _ in range(n_rounds):
        rates: dict[str, float] = {}
        for name, port, mix in targets:
            drive("use", mix)
            before = _outcomes(port) if mix == "real" and name in ("bidder", "old") else None
            cpu = _cpu_times(pids[name])
            got = drive("closed", port, CONNECTIONS, 0.5, ROUND_S)
            # CPU seconds the server spent per answer: what it would cost on a core of its
            # own, whatever else the machine is doing
            rates[f"{name}_cpu"] = (_cpu_times(pids[name])[0] - cpu[0]) / max(1, got["answers"])
            rate = float(got["rate"])
            if before is not None:  # only real work counts: not shed, not late
                rate *= _served_share(before, _outcomes(port))["served"]
            rates[name] = rate
        rounds.append(rates)
    return rounds


class _Bidder:
    """``python -m bidder`` on a free port, one server process, no Postgres (file portfolio)."""

    def __init__(
        self,
        work: Path,
        portfolio: Path,
        model: Path,
        *,
        shed: bool,
        extra: dict[str, str] | None = None,
        tree: Path | None = None,
        name: str = "",
    ) -> None:
        """``tree``: run the bidder of that source tree instead of this one; ``name``: of its
        log file (several bidders at once)."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        env.update(
            {
                "RTBFLEET_BIDDER_PORT": str(self.port),
                "RTBFLEET_BIDDER_PROCESSES": "1",
                "RTBFLEET_BIDDER_PORTFOLIO_FILE": str(portfolio),
                "RTBFLEET_BIDDER_MODEL_FILE": str(model),
                "RTBFLEET_BIDDER_SHED": "1" if shed else "0",
                "RTBFLEET_SIGNING_KEY": SIGNING_KEY,
                "RTBFLEET_MEMCACHED": "",
                "RTBFLEET_PG_DSN": "",
                "RTBFLEET_EVENT_BUS_IN": f"tcp://127.0.0.1:{free_port()}",  # nobody listens
                "RTBFLEET_LOG_LEVEL": "WARNING",
                **(extra or {}),
            }
        )
        self.log = (work / f"bidder-{name or f'shed{int(shed)}'}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bidder"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tree,
        )
        _wait_http(f"http://127.0.0.1:{self.port}/readyz", timeout=180.0)  # 20,000 campaigns

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _run_bidder(
    work: Path,
    portfolio: Path,
    model: Path,
    drive: Callable[..., dict[str, Any]],
    max_rate: float,
) -> dict[str, Any]:
    # Latency at half the maximum, without shedding.
    bidder = _Bidder(work, portfolio, model, shed=False)
    try:
        half = drive("open", bidder.port, OPEN_CONNECTIONS, max_rate / 2, WARMUP_S, PHASE_S)
    finally:
        bidder.stop()
    # Twice the maximum, offered open loop, with shedding on (the default).
    bidder = _Bidder(work, portfolio, model, shed=True)
    try:
        port = bidder.port
        before = _outcomes(port)
        cpu = _cpu_times(bidder.proc.pid)
        double = drive("open", port, OPEN_CONNECTIONS, max_rate * 2, WARMUP_S, PHASE_S)
        double["cpu"] = _cpu_share(cpu, bidder.proc.pid)
        share = _served_share(before, _outcomes(port))
        double["goodput"] = double["rate"] * share["served"]
        double["shed_share"] = share["shed"]
        rss, peak = _rss_mib(bidder.proc.pid)
    finally:
        bidder.stop()
    return {"max_rate": max_rate, "half": half, "double": double, "rss": rss, "peak": peak}


def _ratio(rounds: list[dict[str, float]], over: str, under: str) -> str:
    """The median of the per-round ratios, with their range."""
    ratios = sorted(r[over] / max(r[under], 1e-9) for r in rounds)
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def _report_echoes(ceiling: dict[str, Any], rounds: list[dict[str, float]]) -> None:
    """The echoes alone (``--echoes``): the HTTP core against the raw httptools echo."""
    print(f"load average {os.getloadavg()[0]:.1f} after the run")

    def cpu(name: str) -> str:
        values = sorted(r[f"{name}_cpu"] * 1e6 for r in rounds)
        return f"{statistics.median(values):.1f} us ({values[0]:.1f}-{values[-1]:.1f})"

    print(f"load generator ceiling (trivial server): {ceiling['rate']:,.0f} req/s")
    print(f"{len(rounds)} rounds of {ROUND_S:.1f} s per server, interleaved; medians (range):")
    for name, label in ECHOES:
        values = sorted(r[name] for r in rounds)
        print(
            f"  {label}: {statistics.median(values):,.0f} req/s "
            f"({values[0]:,.0f}-{values[-1]:,.0f}), CPU per answer {cpu(name)}"
        )
    print(
        f"  the HTTP core's echo / raw httptools echo (aim >= 0.8): throughput "
        f"{_ratio(rounds, 'core', 'raw')}, by CPU time per answer "
        f"{_ratio(rounds, 'raw_cpu', 'core_cpu')}"
    )


def _report(
    ceiling: dict[str, Any],
    rounds: list[dict[str, float]],
    result: dict[str, Any],
    compare: Path | None,
) -> None:
    half, double = result["half"], result["double"]
    max_rate = result["max_rate"]

    def rates(name: str) -> str:
        values = sorted(r[name] for r in rounds)
        return f"{statistics.median(values):,.0f} req/s ({values[0]:,.0f}-{values[-1]:,.0f})"

    print(
        f"load generator ceiling (trivial server, {CONNECTIONS} connections): "
        f"{ceiling['rate']:,.0f} req/s = {ceiling['rate'] / max_rate:.1f}x the bidder's maximum"
    )
    print(f"{len(rounds)} rounds of {ROUND_S:.1f} s per server, interleaved; medians (range):")
    for name, label in ECHOES:
        print(f"  {label}: {rates(name)}")
    print(f"  bidder (bids, shedding off): {rates('bidder')}")
    for name, label in ECHOES[:3]:
        aim = " (aim >= 0.7)" if name == "tornado_app" else ""
        print(f"    bidder / {label}: {_ratio(rounds, 'bidder', name)}{aim}")
    print(
        f"  the HTTP core alone / raw httptools echo: {_ratio(rounds, 'core', 'raw')} (aim >= 0.8)"
    )
    print(
        f"  the bidder's crawler path (the same requests from a crawler, refused after decoding "
        f"and validation, events published): {rates('http')} = "
        f"{_ratio(rounds, 'http', 'raw')} x the raw echo"
    )

    def cpu(name: str) -> str:
        values = sorted(r[f"{name}_cpu"] * 1e6 for r in rounds)
        return f"{statistics.median(values):.0f} us ({values[0]:.0f}-{values[-1]:.0f})"

    def cost(over: str, under: str) -> str:  # the inverse ratio of CPU per answer
        return _ratio(rounds, f"{under}_cpu", f"{over}_cpu")

    print("  CPU time per answer in the server process (throughput on a core of its own):")
    names = [name for name, _ in ECHOES] + ["bidder", "http"]  # http: the crawler path
    if compare is not None:
        names += ["old", "old_http"]
    print("    " + ", ".join(f"{name} {cpu(name)}" for name in names))
    print(
        f"    as throughput ratios: bidder / tornado_app {cost('bidder', 'tornado_app')}, "
        f"bidder / tornado_delegate {cost('bidder', 'tornado_delegate')}, bidder / raw "
        f"{cost('bidder', 'raw')}; the HTTP core's echo / raw {cost('core', 'raw')} (aim >= 0.8), "
        f"the crawler path / raw {cost('http', 'raw')}"
    )
    if compare is not None:
        print(
            f"    this bidder / that one: bids {cost('bidder', 'old')}, HTTP path "
            f"{cost('http', 'old_http')}"
        )
    if compare is not None:
        print(
            f"  the bidder of {compare}: {rates('old')}, its HTTP path {rates('old_http')}; "
            f"this one / that one: bids {_ratio(rounds, 'bidder', 'old')}, HTTP path "
            f"{_ratio(rounds, 'http', 'old_http')}"
        )
    print(
        f"at half the maximum ({half['rate']:,.0f} req/s): p50 {half['p50_ms']:.2f} ms, "
        f"p99 {half['p99_ms']:.2f} ms, max {half['max_ms']:.1f} ms (aim p99 < 10 ms)"
    )
    offered = double["sent"] / PHASE_S
    print(
        f"at twice the maximum ({offered:,.0f} req/s offered, shedding on): answers after tmax "
        f"{double['late']} (must be 0), closed unanswered {double['dropped']}, goodput "
        f"{double['goodput']:,.0f} req/s = {double['goodput'] / max_rate:.0%} of the maximum "
        f"(aim >= 80%), {double['shed_share']:.0%} shed, p99 {double['p99_ms']:.1f} ms"
    )
    print(
        f"  (generator: own loop lag max {double['own_lag_ms']:.1f} ms, queue max "
        f"{double['queued_max']}, latest answer {double['late_by_max_ms']:.1f} ms past tmax; "
        f"bidder on a CPU {double['cpu']['on_cpu']:.0%} of the time, waiting for one "
        f"{double['cpu']['waiting']:.0%})"
    )
    print(
        f"resident memory: {result['rss']:.0f} MiB (peak {result['peak']:.0f} MiB; aim < 250 MiB)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
