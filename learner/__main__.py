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

from fleet.errors import DatabaseError
from fleet.service import run_loop, start_up
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
    settings = start_up("learner", LearnerSettings.from_env)
    if settings is None:
        return 2
    loaded: LearnerSettings = settings
    return run_loop("learner", lambda: _main(loaded), expected=(LearnerError,))


if __name__ == "__main__":
    sys.exit(main())
