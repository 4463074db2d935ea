"""``python -m learner`` (``rtbfleet run learner``): one learner until SIGTERM or SIGINT.

Settings come from RTBFLEET_* variables (see learner.settings); a bad one stops the process with
one line. Without ``RTBFLEET_PG_DSN`` it uses the embedded Postgres of the data directory, which
``rtbfleet up`` runs. The line ``listening <port>`` on stdout says where /healthz and /metrics are.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry

from fleet.errors import DatabaseError, FleetError, SettingsError
from fleet.logs import configure_logging
from learner.errors import LearnerError
from learner.settings import LearnerSettings


async def _main(settings: LearnerSettings) -> None:
    from fleet.db import migrate
    from fleet.launcher import configured_dsn
    from learner.app import run

    dsn = configured_dsn(settings.fleet)
    try:
        await migrate(dsn)
    except DatabaseError as exc:  # learn anyway: exports are retried until it is back
        logging.getLogger("learner").warning("schema not checked, Postgres unavailable: %s", exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def listening(port: int) -> None:
        print(f"listening {port}", flush=True)

    await run(settings, dsn, stop=stop, registry=CollectorRegistry(), on_listening=listening)


def main() -> int:
    try:
        settings = LearnerSettings.from_env()
    except SettingsError as exc:
        print(f"learner: bad setting {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.fleet.log_level, settings.fleet.log_json)
    try:
        asyncio.run(_main(settings))
    except (LearnerError, FleetError) as exc:
        print(f"learner: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
