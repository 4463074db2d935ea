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
from fleet.errors import DatabaseError
from fleet.service import run_loop, start_up


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
    settings = start_up("bidlogger", BidloggerSettings.from_env)
    if settings is None:
        return 2
    loaded: BidloggerSettings = settings
    return run_loop("bidlogger", lambda: _main(loaded), expected=(BidloggerError,))


if __name__ == "__main__":
    sys.exit(main())
