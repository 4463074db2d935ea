"""``python -m cache watcher``: the config watcher (one leads, the others stand by).

Settings come from RTBFLEET_* variables (see cache.settings); ``--metrics-port`` serves
``/metrics``, ``/healthz`` and ``/readyz``. SIGTERM or SIGINT stops it cleanly (the service
skeleton, fleet.service, does the settings, logging, signals and stop).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from cache.errors import CacheError
from cache.settings import CacheSettings
from cache.watcher import run_watcher
from fleet.aio import cancel_and_wait
from fleet.service import Runtime, run_service


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cache", description="rtbfleet cache tools")
    commands = parser.add_subparsers(dest="command", required=True)
    watcher = commands.add_parser("watcher", help="turn config_changed into cache invalidations")
    watcher.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port")
    watcher.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics")
    return parser


class WatcherComponent:
    """``run_watcher`` as a component: started in a task, stopped through its stop event."""

    def __init__(self, settings: CacheSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            run_watcher(self.settings, stop=self._stop, registry=self.runtime.registry),
            name="config-watcher",
        )
        self.runtime.watch(self._task)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        # A failure of the task was reported through runtime.watch; here it only has to end.
        done, _ = await asyncio.wait({task}, timeout=self.settings.load_timeout)
        if not done:
            await cancel_and_wait(task)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    address = (args.metrics_host, args.metrics_port) if args.metrics_port else None
    return run_service(
        "cache",
        CacheSettings.from_env,
        WatcherComponent,
        health=lambda settings: address,
        expected=(CacheError,),
    )


if __name__ == "__main__":
    sys.exit(main())
