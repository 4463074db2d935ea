"""``rtbfleet demo``: start a local fleet (or target one), load a generated portfolio, drive it
with the exchange simulator while showing live progress, then print and write the report.

Ctrl-C once stops the traffic and still reports what ran; twice stops at once. The fleet's
processes are the launcher's to stop (it does, in order); this command stops its own tasks.
The exit status is 1 when the report's consistency check fails, 130 when stopped before any
traffic ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from fleet.clock import FleetClock
from fleet.errors import FleetError
from fleet.settings import FleetSettings, load
from sim import learning, loggercounts, pacing_report, render, report, sizing, trackercounts
from sim import portfolio as synthetic
from sim import vocabulary as vocab
from sim.errors import SimConfigError, SimError, TargetError
from sim.exchange import Exchange, Progress
from sim.fleetwatch import FleetWatcher
from sim.market import Market, MarketParams
from sim.report import CampaignPlan
from sim.settings import SimSettings
from sim.summary import render as render_summary
from sim.traffic import Schedule, Traffic

log = logging.getLogger("sim.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, help="seconds of traffic (default 150)")
    parser.add_argument("--rate", type=float, help="mean offered requests per second (400)")
    parser.add_argument("--bidders", type=int, default=1, help="bidder processes (1)")
    parser.add_argument("--seed", type=int, help="seed of the market, traffic and portfolio (1)")
    parser.add_argument("--campaigns", type=int, default=20, help="campaigns to generate (20)")
    parser.add_argument(
        "--time-scale",
        type=float,
        help="simulated seconds per real second (576: a simulated day in 150 s)",
    )
    parser.add_argument(
        "--url", help="drive an external fleet's bidder at this URL instead of starting one"
    )
    parser.add_argument(
        "--tracker-url", default="", help="with --url: where postbacks go (default: from clicks)"
    )
    parser.add_argument(
        "--event-bus", default="", help="with --url: the event bus XPUB endpoint to watch"
    )
    parser.add_argument(
        "--portfolio", type=Path, help="with --url: the portfolio file the fleet serves (plans)"
    )
    parser.add_argument("--report-dir", type=Path, help="where reports/<timestamp>/ go")


def sim_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> SimSettings:
    settings = load(SimSettings, environ)
    overrides: dict[str, Any] = {}
    for arg, field in (
        ("duration", "duration"),
        ("rate", "rate"),
        ("seed", "seed"),
        ("time_scale", "time_scale"),
        ("report_dir", "report_dir"),
    ):
        value = getattr(args, arg, None)
        if value is not None:
            overrides[field] = value
    settings = dataclasses.replace(settings, **overrides)
    for name in ("duration", "rate", "time_scale"):
        if getattr(settings, name) <= 0:
            raise SimConfigError(f"--{name.replace('_', '-')} must be greater than 0")
    return settings


def command(fleet_settings: FleetSettings, args: argparse.Namespace) -> int:
    """``rtbfleet demo`` (registered in sim.registration)."""
    del fleet_settings  # the fleet it starts reads its own
    return run(args)


def run(args: argparse.Namespace) -> int:
    """The command: returns the process exit status."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        try:
            return runner.run(main(args))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\nstopped", file=sys.stderr)
            return 130
        except (SimError, FleetError) as exc:
            print(f"rtbfleet demo: {exc}", file=sys.stderr)
            return 2


class _Interrupts:
    """First Ctrl-C: stop the traffic (or, before it runs, everything); second: everything."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.traffic_running = False
        self._task = asyncio.current_task()
        self._presses = 0

    def __call__(self) -> None:
        self._presses += 1
        if self._presses == 1 and self.traffic_running:
            print("\nstopping the traffic; Ctrl-C again to stop at once", file=sys.stderr)
            self.stop.set()
        elif self._task is not None:
            self._task.cancel()

    @contextlib.contextmanager
    def installed(self) -> Any:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            loop.remove_signal_handler(signal.SIGINT)


async def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = sim_settings(args)
    with _Interrupts().installed() as interrupts:
        if args.url:
            plans = _plans_from_file(args.portfolio) if args.portfolio else []
            return await drive(
                settings,
                bid_urls=[args.url],
                tracker_url=args.tracker_url,
                event_bus=args.event_bus,
                plans=plans,
                interrupts=interrupts,
                meta={"target": args.url, "bidders": None, "campaigns": len(plans)},
                out=out,
            )
        settings = dataclasses.replace(
            settings, sim_start=settings.start(datetime.now(UTC)).isoformat()
        )
        clock = FleetClockPlan(settings)
        # Built before the fleet starts: the fleet clock's lead is for the fleet alone.
        market = await asyncio.to_thread(build_market, settings)
        async with local_fleet(settings, args, out, clock, market) as (fleet, plans):
            return await drive(
                settings,
                bid_urls=[fleet.url("bidder")],
                tracker_url=fleet.urls.get("tracker", ""),
                event_bus=fleet.event_bus_out,
                plans=plans,
                interrupts=interrupts,
                clock=clock.clock,
                market=market,
                pg_dsn=fleet.pg_dsn,
                meta={
                    "target": fleet.url("bidder"),
                    "bidders": args.bidders,
                    "campaigns": len(plans),
                    "services": list(fleet.services),
                },
                out=out,
            )


class FleetClockPlan:
    """The fleet clock of a local run, made when the launcher asks for the children's variables
    (Postgres is up, the services are about to start).

    The simulated day is the fleet's day: the clock runs ``time_scale`` times faster than wall
    time and reads the simulated start ``clock_lead`` seconds later, when the traffic is due to
    begin (the services start and the portfolio loads in the meantime)."""

    def __init__(self, settings: SimSettings, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.wall = wall
        self.clock: FleetClock | None = None

    def __call__(self) -> dict[str, str]:
        s = self.settings
        self.clock = FleetClock(
            scale=s.time_scale,
            origin=self.wall() + s.clock_lead,
            start=s.start(datetime.fromtimestamp(self.wall(), UTC)).timestamp(),
        )
        return self.clock.variables()


@contextlib.asynccontextmanager
async def local_fleet(
    settings: SimSettings,
    args: argparse.Namespace,
    out: TextIO,
    clock: FleetClockPlan | None = None,
    market: Market | None = None,
) -> AsyncIterator[tuple[Any, list[CampaignPlan]]]:
    """A fleet started by the launcher (on the planned fleet clock when given), with a
    generated portfolio loaded into it, its budgets sized against the run's supply when the
    run's ``market`` is given (``sim.sizing``)."""
    from fleet import portfolio
    from fleet.launcher import running_fleet

    fleet_settings = load(FleetSettings)
    # The simulated users grant consent to this vendor id: let the bidder be that vendor.
    os.environ.setdefault("RTBFLEET_BIDDER_VENDOR_ID", str(settings.vendor_id))
    learning.fleet_defaults(os.environ)  # the learner exports every few seconds
    sizing.fleet_defaults(os.environ, settings.time_scale)  # the pacer steps on simulated time
    # The simulator's notices arrive within a few real seconds: the bidder's own bids on a
    # capped campaign need counting only that long before a counter's read.
    os.environ.setdefault("RTBFLEET_BIDDER_FREQUENCY_BID_WINDOW", "5")
    # Flights start on the simulated day (the fleet's day).
    start = settings.start(datetime.now(UTC))
    document = synthetic.generate(args.campaigns, seed=settings.seed, now=start)
    cap_the_broadest(document)
    if market is not None:
        span = sizing.Span(
            start.timestamp(),
            settings.duration * settings.time_scale,
            settings.rate * settings.duration,
        )
        document = await asyncio.to_thread(
            sizing.size_budgets, document, market, span, seed=settings.seed
        )
    plans = [CampaignPlan.of(c) for c in portfolio.validate(document).campaigns]
    print(f"starting the fleet ({args.bidders} bidder process(es)) …", file=out, flush=True)
    async with running_fleet(
        fleet_settings,
        processes={"bidder": args.bidders},
        env=clock,
        quiet=True,
    ) as fleet:
        loaded = await portfolio.load_document(fleet.pg_dsn, document)
        await _fresh_books(fleet.pg_dsn, [int(c["id"]) for c in document["campaigns"]])
        print(
            f"fleet up: bidder {fleet.url('bidder')}, services {', '.join(fleet.services) or '-'}; "
            f"portfolio loaded: {loaded.campaigns} campaigns, {loaded.creatives} creatives "
            f"(logs in {fleet.data_dir / 'logs'})",
            file=out,
            flush=True,
        )
        await asyncio.sleep(1.0)  # bidders reload on the config change notification
        yield fleet, plans


async def _fresh_books(dsn: str, campaign_ids: list[int]) -> None:
    """Forget the spend and traffic counts an earlier demo left for the campaign ids this one
    loads anew: every run starts on the same simulated day, and a campaign that spent its
    budget in the last run would start this one with nothing left (and the pacer's traffic
    profile would be the last run's, not the uniform plan the report measures against)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for table in ("campaign_spend", "tracker_creative_spend", "campaign_opportunities"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE campaign_id = ANY($1::bigint[])", campaign_ids
                )
    finally:
        await conn.close()


def cap_the_broadest(document: dict[str, Any], impressions: int = 2) -> None:
    """Cap the first campaign without targeting at ``impressions`` a day: the one most users
    meet, so that the report's frequency check is held against real repeat visitors."""
    for campaign in document["campaigns"]:
        if not campaign.get("targeting") and not campaign.get("frequency_caps"):
            campaign["frequency_caps"] = [
                {"max_impressions": impressions, "period_seconds": 86_400}
            ]
            return


def _plans_from_file(path: Path) -> list[CampaignPlan]:
    from fleet import portfolio

    return [
        CampaignPlan.of(c)
        for c in portfolio.validate(portfolio.read_document(path), known_advertisers=None).campaigns
    ]


def build_market(settings: SimSettings) -> Market:
    """The synthetic market of a run, from ``settings.seed`` (seconds of work: its users)."""
    return Market(
        MarketParams(
            users=settings.users, placements=settings.publishers, vendor_id=settings.vendor_id
        ),
        settings.seed,
    )


def build_exchange(
    settings: SimSettings,
    bid_urls: Sequence[str],
    tracker_url: str,
    now: datetime,
    market: Market | None = None,
    run_tag: str = "",
) -> Exchange:
    """The market (unless built already), traffic, schedule and exchange of a run, all from
    ``settings.seed``; ``run_tag`` prefixes every request id (the same seed gives the same
    bytes for the same tag)."""
    seed = settings.seed
    market = market or build_market(settings)
    traffic = Traffic(
        market,
        random.Random(f"{seed}:traffic"),
        gzip_share=settings.gzip_share,
        ortb25_share=settings.ortb25_share,
        default_tmax_ms=settings.default_tmax_ms,
        id_prefix=f"{run_tag}-" if run_tag else "",
    )
    schedule = Schedule(
        market,
        random.Random(f"{seed}:schedule"),
        rate=settings.rate,
        time_scale=settings.time_scale,
        sim_start=settings.start(now).timestamp(),
    )
    return Exchange(
        market=market,
        traffic=traffic,
        schedule=schedule,
        settings=settings,
        bid_urls=bid_urls,
        tracker_url=tracker_url,
        rng=random.Random(f"{seed}:followups"),
    )


async def drive(
    settings: SimSettings,
    *,
    bid_urls: Sequence[str],
    tracker_url: str,
    event_bus: str,
    plans: list[CampaignPlan],
    interrupts: _Interrupts | None = None,
    meta: dict[str, Any] | None = None,
    out: TextIO | None = None,
    report_dir: Path | None = None,
    clock: FleetClock | None = None,
    market: Market | None = None,
    pg_dsn: str = "",
) -> int:
    """Run the traffic, show progress, write the report; 0 when the check passes.

    With the fleet's ``clock``, the traffic begins when the fleet clock reads the simulated
    start (or, when the fleet came up later than that, at the fleet's time then)."""
    out = out or sys.stdout
    for url in bid_urls:
        await _reachable(url)
    now = datetime.now(UTC)
    # Request ids unique across runs, as an exchange's are: the tracker remembers every
    # transaction it counted, and a second run with the same seed must not replay the first.
    run_tag = f"{int(now.timestamp() * 1000):x}"
    exchange = build_exchange(settings, bid_urls, tracker_url, now, market, run_tag)
    gc.collect()
    gc.freeze()  # the market's population lives all run: keep it out of every collection
    stop = interrupts.stop if interrupts is not None else asyncio.Event()
    if clock is not None:
        await _meet_the_clock(exchange, clock, stop, out)
    logged_before = await loggercounts.baseline(pg_dsn) if pg_dsn else None
    tracked_before = await trackercounts.baseline(pg_dsn) if pg_dsn else None
    watcher = FleetWatcher(event_bus) if event_bus else None
    if watcher is not None:
        await watcher.start()
    if interrupts is not None:
        interrupts.traffic_running = True
    progress = asyncio.get_running_loop().create_task(
        _show_progress(exchange, settings, plans, out)
    )
    try:
        ledger = await exchange.run(stop)
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        if interrupts is not None:
            interrupts.traffic_running = False
        if watcher is not None:
            await watcher.close()
    offered = exchange.offer_seconds
    records = watcher.records if watcher is not None else None
    if records is None:
        records = report.FleetRecords(why="no event bus to watch (give --event-bus)")
    the_report = report.build(
        ledger,
        plans=plans,
        records=records,
        market=exchange.market,
        meta={
            **(meta or {}),
            "seed": settings.seed,
            "rate": settings.rate,
            "duration": offered,
            "planned_duration": settings.duration,
            "stopped_early": stop.is_set(),
            "time_scale": settings.time_scale,
            "sim_start": datetime.fromtimestamp(exchange.schedule.sim_start, UTC).isoformat(),
            "sim_seconds": offered * settings.time_scale,
            "started_at": now.isoformat(),
            "connections": settings.connections,
        },
    )
    problems = report.check(the_report)
    if pg_dsn:  # the bid loggers' aggregates and the tracker's books beside the simulator's
        problems += await loggercounts.attach(the_report.figures, pg_dsn, logged_before)
        problems += await trackercounts.attach(
            the_report.figures, pg_dsn, tracked_before, run_tag, plans
        )
    directory = (report_dir or settings.report_dir) / now.strftime("%Y%m%d-%H%M%S")
    text = render_summary(the_report, problems)
    page = render.write(the_report, directory, text)
    print("\n" + render_summary(the_report, problems, str(page)), file=out, flush=True)
    return 1 if problems else 0


async def _meet_the_clock(
    exchange: Exchange, clock: FleetClock, stop: asyncio.Event, out: TextIO
) -> None:
    """Wait until the fleet clock reads the simulated start; when it is past already, the
    simulated day starts at the fleet's time now, so that both still agree."""
    wait = clock.wall_at(exchange.schedule.sim_start) - time.time()
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        return
    if wait < -0.05:
        exchange.set_sim_start(clock.now())
        begins = datetime.fromtimestamp(exchange.schedule.sim_start, UTC)
        print(
            f"the fleet took {-wait:.1f} s longer to start than RTBFLEET_SIM_CLOCK_LEAD allows: "
            f"the simulated day begins at {begins:%H:%M} UTC",
            file=out,
            flush=True,
        )


async def _reachable(url: str) -> None:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        async with asyncio.timeout(5.0):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    except (OSError, TimeoutError) as exc:
        raise TargetError(f"cannot reach the bidder at {url}: {exc or 'timed out'}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _plan_usd_micros(plans: list[CampaignPlan], t0: float, sim_elapsed: float) -> int:
    """What the pacer plans the portfolio to have spent ``sim_elapsed`` after ``t0``."""
    total = 0
    for p in plans:
        fx = vocab.FX_PER_USD_MICROS.get(p.currency, 1_000_000)
        planned = pacing_report.planned_for(p, p.daily_budget_micros, t0, t0 + sim_elapsed)
        total += planned * 1_000_000 // fx
    return total


def progress_line(p: Progress, settings: SimSettings, plans: list[CampaignPlan], t0: float) -> str:
    sim_elapsed = p.sim_ts - t0
    hours, rest = divmod(int(max(0.0, sim_elapsed)), 3600)
    bid_rate = 100 * p.bids / p.answered if p.answered else 0.0
    win_rate = 100 * p.wins / p.bids if p.bids else 0.0
    spend = p.spend_usd_micros / 1e6
    plan = f" / plan {_plan_usd_micros(plans, t0, sim_elapsed) / 1e6:,.2f}" if plans else ""
    return (
        f"[{p.elapsed:5.0f}/{settings.duration:.0f} s  sim +{hours:02d}:{rest // 60:02d}] "
        f"{p.rate:6.0f} req/s  bid {bid_rate:4.1f} %  win {win_rate:4.1f} %  "
        f"p50 {p.p50_ms:5.1f} ms  p99 {p.p99_ms:5.1f} ms  late {p.late}  timeouts {p.timeouts}  "
        f"spend {spend:,.2f}{plan} USD"
    )


async def _show_progress(
    exchange: Exchange, settings: SimSettings, plans: list[CampaignPlan], out: TextIO
) -> None:
    tty = out.isatty()
    t0 = exchange.schedule.sim_start
    tick = 0
    while True:
        await asyncio.sleep(1.0)
        tick += 1
        line = progress_line(exchange.progress(), settings, plans, t0)
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif tick % 5 == 0:
            out.write(line + "\n")
            out.flush()
