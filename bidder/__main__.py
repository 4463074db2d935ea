"""``python -m bidder``: the bidder service.

With ``RTBFLEET_BIDDER_PROCESSES`` = 1 the server runs in this process. With more (0: one per
core) this process becomes a supervisor: it sets up Prometheus multiprocess mode in a fresh
temporary directory, forks the servers before any event loop, ZMQ context, thread or pool exists
(each binds the port itself with SO_REUSEPORT), restarts one that dies (with back-off), and on
SIGTERM or SIGINT passes SIGTERM on, waits for the servers to drain and exit, and cleans up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import fleet.service
from bidder.settings import BidderSettings
from fleet.aio import cancel_and_wait
from fleet.service import run_loop, start_up

if TYPE_CHECKING:
    from bidder.service import BidderService

log = logging.getLogger("bidder")

_PR_SET_PDEATHSIG = 1
SETTLE_INTERVAL = 1.0  # seconds between checks for a full pass of the collector to settle


def main(argv: list[str] | None = None) -> int:
    del argv
    settings = start_up("bidder", BidderSettings.from_env)
    if settings is None:
        return 2
    count = settings.process_count
    if count == 1:
        return run_server(settings, 0)
    return Supervisor(settings, count).run()


def run_server(settings: BidderSettings, index: int) -> int:
    """One server process until SIGTERM/SIGINT; the exit status."""
    import uvloop

    return run_loop(
        f"bidder {index}", lambda: serve(settings, index), loop_factory=uvloop.new_event_loop
    )


async def serve(settings: BidderSettings, index: int) -> None:
    await fleet.service.serve(
        f"bidder {index}",
        settings,
        lambda s, runtime: _Server(s, runtime, index),
        # The server drains open requests itself; leave it that and a margin.
        stop_timeout=settings.drain_timeout_s + 10.0,
    )


class _Server:
    """One BidderService as the service skeleton's component (it serves its own /healthz,
    /readyz and /metrics on the bid port)."""

    def __init__(self, settings: BidderSettings, runtime: fleet.service.Runtime, index: int):
        from bidder.collector import LongLived
        from bidder.service import BidderService  # after the fork: prometheus_client's mode set

        self.service = BidderService(
            settings, index=index, clock=runtime.clock, long_lived=LongLived()
        )
        self._heap_keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.service.start()
        self._heap_keeper = asyncio.get_running_loop().create_task(_keep_heap_frozen(self.service))

    def ready(self) -> bool:
        return self.service.is_ready()

    async def stop(self) -> None:
        await cancel_and_wait(self._heap_keeper)
        await self.service.stop()


async def _keep_heap_frozen(service: BidderService) -> None:
    """What start-up built (model, portfolio, index, imports) lives as long as the process:
    keep it out of the collector's full passes, which otherwise pause the loop for 10+ ms
    (each later snapshot is frozen as it is installed: ``bidder.collector``). Then, every
    second, what survived the collector's own full passes is frozen too (``LongLived.settle``)."""
    await service.wait_ready(None)
    long_lived = service.long_lived
    if long_lived is None:
        return
    long_lived.installed()
    long_lived.watch()
    try:
        while True:
            await asyncio.sleep(SETTLE_INTERVAL)
            long_lived.settle()
    finally:
        long_lived.unwatch()


class Supervisor:
    """Forks ``count`` servers and keeps them running until told to stop."""

    def __init__(self, settings: BidderSettings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.children: dict[int, int] = {}  # pid -> index
        self.started: dict[int, float] = {}  # index -> start time
        self.backoff: dict[int, float] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = False

    def run(self) -> int:
        if "prometheus_client" in sys.modules:  # values are chosen at its import
            raise RuntimeError("prometheus_client imported before multiprocess mode was set up")
        metrics_dir = tempfile.mkdtemp(prefix="rtbfleet-bidder-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        try:
            for index in range(self.count):
                self._spawn(index)
            while not self.stopping:
                self._reap()
                now = time.monotonic()
                for index, when in list(self.restart_at.items()):
                    if now >= when:
                        del self.restart_at[index]
                        self._spawn(index)
                time.sleep(0.1)
            return self._stop_children()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: default signal handling, die with the supervisor
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                with contextlib.suppress(OSError, AttributeError):
                    libc = ctypes.CDLL("libc.so.6", use_errno=True)
                    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() == 1:  # the supervisor died between fork and prctl
                    os._exit(1)
                code = run_server(self.settings, index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index
        self.started[index] = time.monotonic()
        log.info("bidder server %d started (pid %d)", index, pid)

    def _reap(self) -> list[int]:
        from prometheus_client import multiprocess

        gone = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # none left at all
                self.children.clear()
                break
            if pid == 0:
                break
            index = self.children.pop(pid, None)
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            if index is None:
                continue
            gone.append(index)
            if self.stopping:
                continue
            ran = time.monotonic() - self.started.get(index, 0.0)
            delay = 0.5 if ran > 60 else min(self.backoff.get(index, 0.25) * 2, 30.0)
            self.backoff[index] = delay
            self.restart_at[index] = time.monotonic() + delay
            log.warning(
                "bidder server %d (pid %d) exited with status %d; restarting in %.1fs",
                index,
                pid,
                os.waitstatus_to_exitcode(status),
                delay,
            )
        return gone

    def _stop_children(self) -> int:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_timeout_s + 10.0
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self.children):
            log.warning("bidder server pid %d did not stop; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            self._reap()
            time.sleep(0.01)
        return 0


if __name__ == "__main__":
    sys.exit(main())
