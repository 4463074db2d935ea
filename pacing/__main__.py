"""``python -m pacing`` (``rtbfleet run pacing``): the pacer. Run two or more; one leads.

Settings come from RTBFLEET_* variables (``rtbfleet settings``); Prometheus metrics are served
on ``RTBFLEET_PACER_METRICS_PORT``. SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from prometheus_client import CollectorRegistry, start_http_server

from fleet.errors import SettingsError
from fleet.logs import configure_logging
from pacing.errors import PacingError
from pacing.service import PacerService
from pacing.settings import PacerServiceSettings


async def _run(settings: PacerServiceSettings, registry: CollectorRegistry) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Plans, days and leases on the fleet clock (the simulated day in a demo), as the bidders.
    clock = settings.fleet.clock()
    service = PacerService(settings, registry=registry, clock=clock.now, scale=clock.scale)
    await service.run(stop)


def main(argv: list[str] | None = None) -> int:
    if sys.argv[1:] if argv is None else argv:
        print(
            "pacing: takes no arguments; see `rtbfleet settings` for its variables", file=sys.stderr
        )
        return 2
    try:
        settings = PacerServiceSettings.from_env()
    except SettingsError as exc:
        print(f"pacing: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.fleet.log_level, settings.fleet.log_json)
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    try:
        asyncio.run(_run(settings, registry))
    except PacingError as exc:
        print(f"pacing: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
