"""``python -m tracker``: one tracker process on the service skeleton.

The tracker's paths (``/win /bill /loss /imp /click /postback``) are routes of the fleet's HTTP
core on ``RTBFLEET_TRACKER_HOST:RTBFLEET_TRACKER_PORT``; ``/healthz``, ``/readyz`` (200 once the
campaign catalog is read) and ``/metrics`` are served on the same port. Time is the fleet clock.
Stop: stop accepting, drain the requests under way, then close the service (what is queued is
committed first).
"""

from __future__ import annotations

import logging
import sys

import fleet.service
from fleet.errors import FleetError
from fleet.service import run_loop, settle_heap, start_up
from tracker.settings import TrackerSettings

log = logging.getLogger("tracker")

DRAIN_TIMEOUT_S = 10.0


def main(argv: list[str] | None = None) -> int:
    del argv
    settings = start_up("tracker", TrackerSettings.from_env)
    if settings is None:
        return 2
    return run_loop("tracker", lambda: serve(settings))


async def serve(settings: TrackerSettings) -> None:
    await fleet.service.serve(
        "tracker", settings, TrackerComponent, stop_timeout=DRAIN_TIMEOUT_S + 20.0
    )


class TrackerComponent:
    """The tracker service and its HTTP server, as the skeleton's component."""

    def __init__(self, settings: TrackerSettings, runtime: fleet.service.Runtime) -> None:
        from fleet.http import HttpServer
        from tracker.app import make_application, make_server
        from tracker.service import TrackerService

        self.settings = settings
        self.runtime = runtime
        clock = runtime.clock
        self.service = TrackerService(
            settings, runtime.registry, clock=clock.now, scale=clock.scale
        )
        app = make_application(ready=self.ready, registry=runtime.registry)
        self.server: HttpServer = make_server(
            lambda: self.service.tracker, app, settings.http, runtime.registry, clock.now
        )
        self._started = False

    async def start(self) -> None:
        s = self.settings
        if not s.fleet.pg_dsn:
            raise FleetError("tracker: RTBFLEET_PG_DSN is required (spend is kept in Postgres)")
        # the port first: /healthz answers (and /readyz says 503) while Postgres is reached
        await self.server.listen(s.port, s.host)
        await self.service.start(s.fleet.pg_dsn)
        settle_heap()  # the start-up heap out of the collections the notices set off
        self._started = True
        log.info("tracker listening on %s:%d", s.host, s.port)

    def ready(self) -> bool:
        return self._started and self.service.tracker.ready

    async def stop(self) -> None:
        await self.server.shutdown(DRAIN_TIMEOUT_S)
        await self.service.close()


if __name__ == "__main__":
    sys.exit(main())
