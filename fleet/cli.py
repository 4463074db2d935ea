"""The ``rtbfleet`` command line.

    rtbfleet up                       run a whole fleet on this machine until Ctrl-C
    rtbfleet demo                     the fleet against the exchange simulator, with a report
    rtbfleet db migrate               apply the schema migrations (idempotent)
    rtbfleet campaigns load FILE      validate a YAML/JSON portfolio, then upsert all or nothing
    rtbfleet campaigns list           the campaigns in the config database
    rtbfleet campaigns generate -n N  a realistic synthetic portfolio (YAML on stdout)
    rtbfleet proxy --in EP --out EP   one XSUB/XPUB bus proxy
    rtbfleet run SERVICE [ARGS]       one service in the foreground (a container's command)
    rtbfleet settings                 every RTBFLEET_* variable with its value

Errors are one line on stderr and a non-zero exit status; nothing is half written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import ConfigValidationError, FleetError, SettingsError
from fleet.logs import configure_logging
from fleet.money import format_micros
from fleet.settings import FleetSettings, describe, load

log = logging.getLogger("fleet.cli")


@contextlib.asynccontextmanager
async def database(settings: FleetSettings, migrated: bool = True) -> AsyncIterator[str]:
    """The configured DSN, or the embedded Postgres of the data directory (started for the
    duration of the command when ``rtbfleet up`` is not already running it)."""
    if settings.pg_dsn:
        yield settings.pg_dsn
        return
    from fleet.launcher import embedded_postgres

    server = embedded_postgres(settings.data_dir.resolve())
    already_running = await asyncio.to_thread(server.is_running)
    dsn = await asyncio.to_thread(server.start)
    try:
        if migrated:
            from fleet.db import migrate

            await migrate(dsn)
        yield dsn
    finally:
        if not already_running:
            await asyncio.to_thread(server.stop)


async def cmd_up(settings: FleetSettings, args: argparse.Namespace) -> int:
    from fleet.launcher import running_fleet

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_fleet(settings, bidders=args.bidders) as fleet:
        print(
            f"rtbfleet is up: bidder {fleet.bidder_url}/openrtb2/bid, "
            f"services {', '.join(fleet.services) or 'none'}, Postgres {fleet.pg_dsn}, "
            f"memcached {fleet.memcached or 'off'}. Ctrl-C stops it.",
            flush=True,
        )
        await stop.wait()
        print("rtbfleet: stopping", flush=True)
    print("rtbfleet: stopped", flush=True)
    return 0


async def cmd_migrate(settings: FleetSettings, args: argparse.Namespace) -> int:
    from fleet.db import migrate

    async with database(settings, migrated=False) as dsn:
        applied = await migrate(dsn)
    print(f"applied {len(applied)} migration(s)" if applied else "schema is up to date")
    return 0


async def cmd_campaigns_load(settings: FleetSettings, args: argparse.Namespace) -> int:
    from fleet.portfolio import load_document, read_document, validate

    document = read_document(Path(args.file))
    validate(document, known_advertisers=None)  # every error in the file, before connecting
    async with database(settings) as dsn:
        result = await load_document(dsn, document)
    print(
        f"loaded {result.advertisers} advertiser(s), {result.campaigns} campaign(s), "
        f"{result.creatives} creative(s)"
    )
    return 0


async def cmd_campaigns_list(settings: FleetSettings, args: argparse.Namespace) -> int:
    import asyncpg

    from fleet.db.config_store import load_snapshot

    async with database(settings) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            snapshot = await load_snapshot(conn)
        finally:
            await conn.close()
    if args.json:
        import msgspec

        print(msgspec.json.encode(snapshot.campaigns).decode())
        return 0
    print(f"{'id':>6}  {'status':<8} {'goal':<4} {'daily budget':>16} {'creatives':>9}  name")
    for c in snapshot.campaigns:
        budget = format_micros(c.daily_budget_micros, c.currency)
        print(
            f"{c.id:>6}  {c.status:<8} {c.goal_type:<4} {budget:>16} "
            f"{len(c.creatives):>9}  {c.name}"
        )
    print(f"{len(snapshot.campaigns)} campaign(s), config version {snapshot.version}")
    return 0


async def cmd_campaigns_generate(settings: FleetSettings, args: argparse.Namespace) -> int:
    from fleet.portfolio import generate, load_document

    document = generate(args.count, seed=args.seed)
    if args.load:
        async with database(settings) as dsn:
            result = await load_document(dsn, document)
        print(f"generated and loaded {result.campaigns} campaign(s), {result.creatives} creatives")
        return 0
    text = (
        json.dumps(document, indent=1)
        if args.format == "json"
        else yaml.safe_dump(document, sort_keys=False, width=120)
    )
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, text)
    else:
        sys.stdout.write(text)
    return 0


SETTINGS_CLASSES = (
    ("fleet.settings", "FleetSettings"),
    ("fleet.launcher", "LauncherSettings"),
    ("fleet.http.limits", "HttpLimits"),
    ("bidder.settings", "BidderSettings"),
    ("cache.settings", "CacheSettings"),
    ("sim.settings", "SimSettings"),
)


def settings_table() -> list[tuple[str, str, str, str]]:
    """(service, variable, default, meaning) for every settings class in this build."""
    import importlib

    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for module_name, class_name in SETTINGS_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        for variable, default, help_text in describe(cls):
            if variable not in seen:
                seen.add(variable)
                rows.append((module_name.split(".")[0], variable, default, help_text))
    return rows


def cmd_settings(settings: FleetSettings, args: argparse.Namespace) -> int:
    if args.markdown:
        print("| service | variable | default | meaning |\n|---|---|---|---|")
        for service, variable, default, help_text in settings_table():
            print(f"| {service} | `{variable}` | `{default}` | {help_text} |")
        return 0
    for service, variable, default, help_text in settings_table():
        print(f"{service:<7} {variable:<40} {default:<24} {help_text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtbfleet", description="rtbfleet bidder fleet")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole fleet on this machine until Ctrl-C")
    up.add_argument("--bidders", type=int, default=None, help="bidder processes (default: env)")
    up.set_defaults(handler=cmd_up)

    demo = sub.add_parser("demo", help="run the fleet against the exchange simulator")
    try:
        import sim.demo as sim_demo

        sim_demo.add_arguments(demo)
        demo.set_defaults(handler=None, sync_handler=lambda s, a: sim_demo.run(a))
    except ImportError:
        demo.set_defaults(handler=None, sync_handler=_missing("the simulator (sim/) is missing"))

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply schema migrations").set_defaults(handler=cmd_migrate)

    camp = sub.add_parser("campaigns", help="campaign portfolio")
    camp_sub = camp.add_subparsers(dest="campaigns_command", required=True)
    load_p = camp_sub.add_parser("load", help="validate and upsert a YAML or JSON portfolio")
    load_p.add_argument("file")
    load_p.set_defaults(handler=cmd_campaigns_load)
    list_p = camp_sub.add_parser("list", help="list campaigns")
    list_p.add_argument("--json", action="store_true")
    list_p.set_defaults(handler=cmd_campaigns_list)
    gen = camp_sub.add_parser("generate", help="a synthetic portfolio for demos and benchmarks")
    gen.add_argument("--count", "-n", type=int, default=50)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--format", choices=("yaml", "json"), default="yaml")
    gen.add_argument("--out", help="write to this file instead of stdout")
    gen.add_argument("--load", action="store_true", help="load into the config database")
    gen.set_defaults(handler=cmd_campaigns_generate)

    # `proxy` and `run` hand their own arguments on untouched (see main()).
    sub.add_parser("proxy", help="run one XSUB/XPUB bus proxy (--in EP --out EP)", add_help=False)

    run = sub.add_parser("run", help="run one service in the foreground (bidder, cache, ...)")
    run.add_argument("service", choices=_service_packages())

    settings_p = sub.add_parser("settings", help="every RTBFLEET_* variable with its default")
    settings_p.add_argument("--markdown", action="store_true", help="as a Markdown table")
    settings_p.set_defaults(handler=None, sync_handler=cmd_settings)
    return parser


def _missing(reason: str) -> Callable[[FleetSettings, argparse.Namespace], int]:
    def handler(settings: FleetSettings, args: argparse.Namespace) -> int:
        raise FleetError(reason)

    return handler


def _service_packages() -> tuple[str, ...]:
    from fleet.launcher import SERVICES

    return tuple(dict.fromkeys(service.module for service in SERVICES))


def _run_service(service: str, rest: list[str]) -> int:
    import importlib.util
    import os

    packages = _service_packages()
    if service not in packages:
        print(f"rtbfleet: unknown service {service!r} ({', '.join(packages)})", file=sys.stderr)
        return 2
    if importlib.util.find_spec(f"{service}.__main__") is None:
        print(f"rtbfleet: the {service} service is not part of this build", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, "-m", service, *rest])


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["proxy"]:
        from fleet.proxy import proxy_main

        return int(proxy_main(words[1:]))
    if words[:1] == ["run"] and len(words) >= 2:
        return _run_service(words[1], words[2:])
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        settings = load(FleetSettings)
        # One-shot commands print their result; only long-running ones log at INFO.
        quiet = args.command not in ("up", "demo", "proxy") and settings.log_level == "INFO"
        configure_logging("WARNING" if quiet else settings.log_level, settings.log_json)
        handler: Any = args.handler
        if handler is None:
            result: int = args.sync_handler(settings, args)
            return result
        return int(asyncio.run(handler(settings, args)))
    except ConfigValidationError as exc:
        for where, message in exc.problems:
            print(f"{where}: {message}", file=sys.stderr)
        print(f"rtbfleet: {len(exc.problems)} error(s); nothing was written", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(f"rtbfleet: bad setting {exc}", file=sys.stderr)
        return 2
    except FleetError as exc:
        print(f"rtbfleet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
