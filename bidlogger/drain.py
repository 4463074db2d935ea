"""The spool drained into Postgres: spooled batches through the writer process, oldest first.

``writer.depth`` batches are in flight at once (``bidlogger.writer``): each commits after the
one before it, so batches land in flush order, and a failed one rolls back those after it (they
are tried again, from the spool). A batch leaves the spool only once Postgres has it (or had it
already: a duplicate). While Postgres is unavailable the batches wait, and the drain retries
with a backoff; a batch Postgres refuses for its content is set aside (``bad/``) and its events
counted lost; a spooled file that does not decode is set aside too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from bidlogger.errors import BatchRejected, BidloggerError, SpoolError, StoreError
from bidlogger.spool import Spool
from bidlogger.writer import Request, Writer

log = logging.getLogger("bidlogger")

RETRY_MIN = 0.2
RETRY_MAX = 5.0

Flight = deque[tuple[int, float, Request]]  # (flush seq, submitted at, reply)


class Drain:
    """``run()`` as a task; ``spooled(seq)`` after each batch written to the spool."""

    def __init__(
        self,
        spool: Spool,
        writer: Writer,
        *,
        mono: Callable[[], float],
        observe: Callable[[float], None],
        drop: Callable[[str, int], None],
    ) -> None:
        self.spool = spool
        self.writer = writer
        self.mono = mono
        self.observe = observe  # seconds from submission to commit, per batch
        self.drop = drop  # (cause, events) lost
        self.batches = {"applied": 0, "duplicate": 0, "failed": 0, "rejected": 0}
        self.postgres_up = False
        self.spooled_at: dict[int, float] = {}
        self._spooled = asyncio.Event()
        self._written = asyncio.Event()

    def spooled(self, seq: int) -> None:
        self.spooled_at[seq] = self.mono()
        self._spooled.set()

    def oldest_age(self) -> float:
        """Seconds the oldest batch not yet in Postgres has waited (this run's batches)."""
        oldest = min(self.spooled_at.values(), default=None)
        return 0.0 if oldest is None else max(0.0, self.mono() - oldest)

    async def run(self) -> None:
        delay = RETRY_MIN
        flight: Flight = deque()
        try:
            while True:
                self._fill(flight)
                if not flight:
                    self._spooled.clear()
                    await self._spooled.wait()
                    continue
                head = asyncio.wrap_future(flight[0][2])
                if len(flight) < self.writer.depth:  # a batch spooled meanwhile goes in at once
                    self._spooled.clear()
                    spooled = asyncio.ensure_future(self._spooled.wait())
                    await asyncio.wait((head, spooled), return_when=asyncio.FIRST_COMPLETED)
                    spooled.cancel()
                    if not head.done():
                        continue
                seq, started, _ = flight.popleft()
                try:
                    applied = await head
                except SpoolError as exc:
                    await self._settle(flight)  # rolled back after it: submitted again
                    log.error("spooled batch %d set aside: %s", seq, exc)
                    self.spool.quarantine(seq)
                    self.spooled_at.pop(seq, None)
                    continue
                except StoreError as exc:
                    await self._settle(flight)
                    if isinstance(exc, BatchRejected):
                        self._rejected(seq, exc)
                        continue
                    self.batches["failed"] += 1
                    if self.postgres_up:
                        log.warning("Postgres unavailable, batches wait in the spool: %s", exc)
                    self.postgres_up = False
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                if not self.postgres_up:
                    log.info("Postgres takes batches again (%d waiting)", len(self.spool))
                self.postgres_up = True
                delay = RETRY_MIN
                self.observe(self.mono() - started)
                self.batches["applied" if applied else "duplicate"] += 1
                self.spool.remove(seq)
                self.spooled_at.pop(seq, None)
                self._written.set()
        finally:
            for _, _, request in flight:
                request.cancel()

    def _fill(self, flight: Flight) -> None:
        """Submit the next spooled batches, up to the writer's depth."""
        while len(flight) < self.writer.depth:
            last = flight[-1][0] if flight else None
            seq = self.spool.oldest() if last is None else self.spool.oldest_after(last)
            if seq is None:
                return
            before = flight[-1][2] if flight else None
            flight.append((seq, self.mono(), self.writer.submit(seq, self.spool.path(seq), before)))

    @staticmethod
    async def _settle(flight: Flight) -> None:
        """The batches in flight after a failed one: their outcome set aside (they roll back,
        or were duplicates), each tried again from the spool."""
        while flight:
            _, _, request = flight.popleft()
            with contextlib.suppress(BidloggerError, concurrent.futures.CancelledError):
                await asyncio.wrap_future(request)

    def _rejected(self, seq: int, exc: BatchRejected) -> None:
        log.error("%s; set aside in %s", exc, self.spool.bad_directory)
        self.batches["rejected"] += 1
        self.drop("rejected", exc.events)
        self.spool.quarantine(seq)
        self.spooled_at.pop(seq, None)

    async def wait_written(self, timeout: float) -> bool:
        """True once the spool is empty (every batch so far is in Postgres)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(self.spool):
                    self._written.clear()
                    await self._written.wait()
                return True
        return False
