"""``python -m cache watcher``: the config watcher (one leads, the others stand by).

Settings come from RTBFLEET_* variables (see cache.settings); ``--metrics-port`` serves
Prometheus metrics. SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from prometheus_client import CollectorRegistry, start_http_server

from cache.errors import CacheError
from cache.settings import CacheSettings
from cache.watcher import run_watcher
from fleet.errors import SettingsError
from fleet.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cache", description="rtbfleet cache tools")
    commands = parser.add_subparsers(dest="command", required=True)
    watcher = commands.add_parser("watcher", help="turn config_changed into cache invalidations")
    watcher.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port")
    watcher.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics")
    return parser


async def _watch(settings: CacheSettings, registry: CollectorRegistry) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_watcher(settings, stop=stop, registry=registry)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = CacheSettings.from_env()
    except SettingsError as exc:
        print(f"cache: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.fleet.log_level, settings.fleet.log_json)
    registry = CollectorRegistry()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    try:
        asyncio.run(_watch(settings, registry))
    except CacheError as exc:
        print(f"cache: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
