"""``python -m bidlogger`` (``rtbfleet run bidlogger``): one bid logger until SIGTERM or SIGINT.

Settings come from RTBFLEET_* variables (see bidlogger.settings); a bad one stops the process with
one line. Without ``RTBFLEET_PG_DSN`` it uses the embedded Postgres of the data directory, which
``rtbfleet up`` runs. The line ``listening <port>`` on stdout says where /healthz and /metrics are.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry

from bidlogger.errors import BidloggerError
from bidlogger.settings import BidloggerSettings
from fleet.errors import DatabaseError, FleetError, SettingsError
from fleet.logs import configure_logging


async def _main(settings: BidloggerSettings) -> None:
    from bidlogger.app import run
    from fleet.db import migrate
    from fleet.launcher import configured_dsn

    dsn = configured_dsn(settings.fleet)
    try:
        await migrate(dsn)
    except DatabaseError as exc:  # listen anyway: batches wait in the spool until it is back
        logging.getLogger("bidlogger").warning("schema not checked, Postgres unavailable: %s", exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def listening(port: int) -> None:
        print(f"listening {port}", flush=True)

    await run(settings, dsn, stop=stop, registry=CollectorRegistry(), on_listening=listening)


def main() -> int:
    try:
        settings = BidloggerSettings.from_env()
    except SettingsError as exc:
        print(f"bidlogger: bad setting {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.fleet.log_level, settings.fleet.log_json)
    try:
        asyncio.run(_main(settings))
    except (BidloggerError, FleetError) as exc:
        print(f"bidlogger: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
