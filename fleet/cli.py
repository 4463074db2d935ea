"""The ``rtbfleet`` command line.

    rtbfleet up                       run every registered service on this machine until Ctrl-C
    rtbfleet db migrate               apply the schema migrations (idempotent)
    rtbfleet campaigns load FILE      validate a YAML/JSON portfolio, then upsert all or nothing
    rtbfleet campaigns list           the campaigns in the config database
    rtbfleet proxy --in EP --out EP   one XSUB/XPUB bus proxy
    rtbfleet run SERVICE [ARGS]       one service in the foreground (a container's command)
    rtbfleet services                 the registered services, in start order
    rtbfleet settings                 every RTBFLEET_* variable with its default

Packages add commands through the ``rtbfleet.commands`` entry points (``fleet.registry``);
``rtbfleet --help`` lists them. Errors are one line on stderr and a non-zero exit status;
nothing is half written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from fleet import registry
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


def _process_counts(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            counts[name.strip()] = int(number)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise FleetError(f"--processes {value}: expected SERVICE=N (see rtbfleet services)")
    return counts


async def cmd_up(settings: FleetSettings, args: argparse.Namespace) -> int:
    from fleet.launcher import running_fleet

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    processes = _process_counts(args.processes)
    async with running_fleet(settings, processes=processes) as fleet:
        shown = [
            f"{name} {fleet.urls[name]}" if name in fleet.urls else name for name in fleet.services
        ]
        print(
            f"rtbfleet is up: services {', '.join(shown) or 'none'}; Postgres {fleet.pg_dsn}, "
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
    for line in result.kept_pauses:
        print(line)
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
        # pauses a rule made (a later load keeps them): who and why
        if c.paused_by:
            print(f"{'':>8}paused by {c.paused_by}: {c.pause_reason}")
        for cr in c.creatives:
            if cr.paused_by:
                print(f"{'':>8}creative {cr.id} paused by {cr.paused_by}: {cr.pause_reason}")
    print(f"{len(snapshot.campaigns)} campaign(s), config version {snapshot.version}")
    return 0


def settings_table() -> list[tuple[str, str, str, str]]:
    """(owner, variable, default, meaning) for the kernel's settings, every registered
    service's (owner: the service) and every registered command's (owner: its package)."""
    from fleet.http.limits import HttpLimits
    from fleet.launcher import LauncherSettings

    classes: list[tuple[str, type[Any]]] = [
        ("fleet", FleetSettings),
        ("fleet", LauncherSettings),
        ("fleet", HttpLimits),
    ]
    for service in registry.services():
        cls = service.settings_class()
        if cls is not None:
            classes.append((service.name, cls))
    for command in registry.commands():
        cls = command.settings_class()
        if cls is not None:
            classes.append((command.settings.split(".")[0], cls))
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for owner, cls in classes:
        for variable, default, help_text in describe(cls):
            if variable not in seen:
                seen.add(variable)
                rows.append((owner, variable, default, help_text))
    return rows


def cmd_settings(settings: FleetSettings, args: argparse.Namespace) -> int:
    rows = settings_table()
    if args.markdown:
        print("| service | variable | default | meaning |\n|---|---|---|---|")
        for owner, variable, default, help_text in rows:
            print(f"| {owner} | `{variable}` | `{default}` | {help_text} |")
        return 0
    width = max((len(owner) for owner, *_ in rows), default=7)
    for owner, variable, default, help_text in rows:
        print(f"{owner:<{width}} {variable:<40} {default:<24} {help_text}")
    return 0


def cmd_services(settings: FleetSettings, args: argparse.Namespace) -> int:
    print(f"{'order':>5}  {'service':<16} {'runs':<28} {'health':<28} settings")
    for service in registry.services():
        runs = " ".join(["python -m", service.module, *service.args])
        health = f"{service.port_setting}{service.health_path}" if service.health_path else "-"
        installed = "" if service.available() else "  (not installed)"
        print(
            f"{service.order:>5}  {service.name:<16} {runs:<28} {health:<28} "
            f"{service.settings or '-'}{installed}"
        )
    return 0


def build_parser(words: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; a registered command's own options are added (its code imported) only when
    ``words`` select it."""
    parser = argparse.ArgumentParser(prog="rtbfleet", description="rtbfleet bidder fleet")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every registered service on this machine until Ctrl-C")
    up.add_argument(
        "--processes",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="processes of a service that can run several (0: one per core); repeatable",
    )
    up.set_defaults(handler=cmd_up)

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

    # `proxy` and `run` hand their own arguments on untouched (see main()).
    sub.add_parser("proxy", help="run one XSUB/XPUB bus proxy (--in EP --out EP)", add_help=False)
    run = sub.add_parser("run", help="run one registered service in the foreground")
    run.add_argument("service", help="a registered service (see `rtbfleet services`)")
    run.set_defaults(handler=None, sync_handler=lambda s, a: _run_service(a.service, []))

    sub.add_parser("services", help="the registered services, in start order").set_defaults(
        handler=None, sync_handler=cmd_services
    )
    settings_p = sub.add_parser("settings", help="every RTBFLEET_* variable with its default")
    settings_p.add_argument("--markdown", action="store_true", help="as a Markdown table")
    settings_p.set_defaults(handler=None, sync_handler=cmd_settings)

    groups = {"campaigns": camp_sub}
    for command in registry.commands():
        if len(command.path) == 2:
            group = groups.get(command.path[0])
            if group is None:  # a package's own group (`learner train`): made on first use
                if command.path[0] in sub.choices:
                    raise registry.RegistryError(
                        f"command {command.name!r}: {command.path[0]!r} is not a command group"
                    )
                group_p = sub.add_parser(command.path[0], help=f"{command.path[0]} commands")
                group = groups[command.path[0]] = group_p.add_subparsers(
                    dest=f"{command.path[0]}_command", required=True
                )
        else:
            group = sub
        p = group.add_parser(command.path[-1], help=command.help)
        if tuple(words[: len(command.path)]) == command.path:
            command.add_arguments(p)
        p.set_defaults(handler=None, sync_handler=_registered(command), command_name=command)
    return parser


def _registered(command: registry.Command) -> Callable[[FleetSettings, argparse.Namespace], int]:
    def handler(settings: FleetSettings, args: argparse.Namespace) -> int:
        return int(command.runner()(settings, args))

    return handler


def _run_service(name: str, rest: list[str]) -> int:
    """``rtbfleet run NAME [ARGS]``: exec ``python -m <module> <its args> ARGS``. NAME is a
    registered service, or a registered service's package (then ARGS alone follow it)."""
    import os

    found = [s for s in registry.services() if s.name == name]
    if found:
        argv = [*found[0].args, *rest]
    else:
        found = [s for s in registry.services() if s.module == name]
        argv = list(rest)
    if not found:
        known = ", ".join(s.name for s in registry.services()) or "none"
        print(f"rtbfleet: unknown service {name!r} (registered: {known})", file=sys.stderr)
        return 2
    service = found[0]
    if not service.available():
        print(f"rtbfleet: the {service.name} service is not installed", file=sys.stderr)
        return 2
    os.environ.update(service.env)  # as `rtbfleet up` gives it
    os.execv(sys.executable, [sys.executable, "-m", service.module, *argv])


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        if words[:1] == ["proxy"]:
            from fleet.proxy import proxy_main

            return int(proxy_main(words[1:]))
        if words[:1] == ["run"] and len(words) >= 2:
            return _run_service(words[1], words[2:])
        parser = build_parser(words)
        args = parser.parse_args(words)
        settings = load(FleetSettings)
        # One-shot commands print their result; only long-running ones log at INFO.
        command = getattr(args, "command_name", None)
        long_running = args.command in ("up", "proxy") or (
            command is not None and command.long_running
        )
        quiet = not long_running and settings.log_level == "INFO"
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
