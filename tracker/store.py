"""Postgres, exactly once, with group commit (asyncpg).

Each counted notice is one row of ``tracker_notices`` keyed by (txid, kind); the row and its
effects (``campaign_spend`` and ``tracker_creative_spend`` for a billing notice, a
``tracker_clicks`` row for a click) are written by one statement, so they commit together or not
at all. ``GroupCommitter`` gathers the notices that arrive while a commit is in flight into the
next one (up to ``batch_max``; ``concurrency`` commits at once): each caller awaits its notice's
outcome, which is known only once its batch has committed.

Spend lanes: each of the concurrent commits adds its spend to a row of its own, its lane
(``campaign_spend`` and ``tracker_creative_spend`` are keyed by campaign or creative, day and
lane). A commit holds the lock of the spend rows it updated until its WAL flush ends; with one
row per campaign and day the concurrent commits of a campaign waited for each other's flush, one
at a time, and more of them in flight only made the queue longer. With a lane each, they flush
together (Postgres writes the WAL of the commits waiting at once in one flush). A process takes
``concurrency`` consecutive lanes from a random first one (``spend_lanes``); two processes that
share a lane only wait for each other there. The spend of a campaign and day is the sum over
its lanes, and every reader sums. ``fold_lanes`` brings past days back to one row each (the
service runs it hourly), so readers of many days do not read a row per lane.

Duplicates: ``INSERT ... ON CONFLICT DO NOTHING`` on the key returns only the rows really
inserted; a copy in the same batch, an earlier one, or one committed at the same moment by
another process (the insert waits for that transaction, then finds the row) is a duplicate.
Batches insert their keys in sorted order, so that two processes cannot deadlock on them.

When Postgres cannot be reached or the commit does not finish within ``timeout``, every notice
of the batch gets ``Unavailable`` (answered 503): the sender retries, and a notice that did
commit after all is then a duplicate. For a moment after that (``fail_fast``), new notices are
answered unavailable at once rather than each waiting out the timeout. A billing notice whose
campaign or exchange rate is gone by the time it commits is not written and comes back
``unpriced``. A batch that fails on its data anyway is committed again notice by notice so
that one bad notice fails alone.

Commits are synchronous (``synchronous_commit = on`` on these connections): an acknowledged
notice survives a crash of Postgres too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Final

import asyncpg
import msgspec

from fleet.aio import cancel_and_wait
from fleet.db.config_store import load_snapshot
from tracker.batch import Batch, NoticeRow, Outcomes, RowResult, SharedFuture
from tracker.catalog import Catalog
from tracker.errors import Unavailable
from tracker.metrics import TrackerMetrics

log = logging.getLogger("tracker.store")

SERVER_SETTINGS: Final = {"synchronous_commit": "on", "application_name": "rtbfleet-tracker"}
_CONNECTION_ERRORS: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)
_RETRYABLE: Final = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)

BATCH_SQL: Final = """
WITH input AS (
    SELECT txid, kind, campaign_id, creative_id, price_micros, currency, to_timestamp(at) AS at,
           nullif(user_key, '') AS user_key, nullif(click_id, '') AS click_id
    FROM json_to_recordset($1::json)
        AS t(txid text, kind text, campaign_id bigint, creative_id bigint, price_micros bigint,
             currency text, at float8, user_key text, click_id text)
),
priced AS (
    SELECT i.*,
           CASE WHEN i.kind = 'bill'
                THEN floor(i.price_micros::numeric * fc.per_usd_micros
                           / (fb.per_usd_micros::numeric * 1000))::bigint
                ELSE 0 END AS cost_micros
    FROM input i
    LEFT JOIN campaigns c ON c.id = i.campaign_id
    LEFT JOIN fx_rates fb ON fb.currency = i.currency
    LEFT JOIN fx_rates fc ON fc.currency = c.currency
),
ins AS (
    INSERT INTO tracker_notices AS n
        (txid, kind, campaign_id, creative_id, price_micros, currency, cost_micros, recorded_at)
    SELECT txid, kind, campaign_id, creative_id, price_micros, currency, cost_micros, at
    FROM priced WHERE cost_micros IS NOT NULL ORDER BY txid, kind
    ON CONFLICT (txid, kind) DO NOTHING
    RETURNING n.txid, n.kind, n.campaign_id, n.creative_id, n.cost_micros, n.recorded_at
),
billed AS (
    SELECT ins.*, (ins.recorded_at AT TIME ZONE c.timezone)::date AS day
    FROM ins JOIN campaigns c ON c.id = ins.campaign_id
    WHERE ins.kind = 'bill'
),
spend AS (
    INSERT INTO campaign_spend AS s (campaign_id, day, lane, spent_micros, impressions,
                                     updated_at)
    SELECT campaign_id, day, $2::smallint, sum(cost_micros), count(*), now()
    FROM billed GROUP BY campaign_id, day ORDER BY campaign_id, day
    ON CONFLICT (campaign_id, day, lane) DO UPDATE
        SET spent_micros = s.spent_micros + EXCLUDED.spent_micros,
            impressions = s.impressions + EXCLUDED.impressions,
            updated_at = EXCLUDED.updated_at
),
creative_spend AS (
    INSERT INTO tracker_creative_spend AS s (creative_id, campaign_id, day, lane,
                                             spent_micros, impressions)
    SELECT creative_id, min(campaign_id), day, $2::smallint, sum(cost_micros), count(*)
    FROM billed GROUP BY creative_id, day ORDER BY creative_id, day
    ON CONFLICT (creative_id, day, lane) DO UPDATE
        SET spent_micros = s.spent_micros + EXCLUDED.spent_micros,
            impressions = s.impressions + EXCLUDED.impressions
),
clicks AS (
    INSERT INTO tracker_clicks (click_id, txid, campaign_id, creative_id, user_key, clicked_at)
    SELECT i.click_id, i.txid, i.campaign_id, i.creative_id, i.user_key, i.at
    FROM input i JOIN ins ON ins.txid = i.txid AND ins.kind = i.kind
    WHERE i.kind = 'click' AND i.click_id IS NOT NULL
    ORDER BY i.click_id
    ON CONFLICT (click_id) DO NOTHING
)
SELECT txid, kind, cost_micros, true AS priced FROM ins
UNION ALL
SELECT txid, kind, 0, false FROM priced WHERE cost_micros IS NULL
"""


def spend_lanes(first: int, count: int, lanes: int) -> tuple[int, ...]:
    """The lanes of a process's ``count`` concurrent commits: consecutive from ``first``,
    wrapping at ``lanes`` (the lanes of the whole fleet, ``RTBFLEET_TRACKER_SPEND_LANES``)."""
    if not 0 < count <= lanes <= 32767:  # a lane is a smallint
        raise ValueError(f"{count} concurrent commits need as many lanes (of {lanes})")
    return tuple((first + i) % lanes for i in range(count))


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


_encode_rows: Final = msgspec.json.Encoder().encode


def batch_argument(rows: Sequence[NoticeRow]) -> str:
    """The statement's one parameter: the batch's rows as one JSON array, one object per
    distinct key (its first copy), read in SQL by ``json_to_recordset``. One parameter encoded
    in C, not nine arrays encoded element by element (asyncpg checks each element's type in
    Python); a row's time goes as seconds (``to_timestamp`` keeps the microseconds)."""
    firsts: dict[tuple[str, str], NoticeRow] = {}
    for r in rows:
        firsts.setdefault((r.txid, r.kind), r)
    unique = rows if len(firsts) == len(rows) else list(firsts.values())
    return _encode_rows(unique).decode()


_NOT_COUNTED: Final = RowResult(False)


class GroupCommitter:
    """Many notices per transaction; each ``submit`` returns once its batch has committed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: TrackerMetrics,
        *,
        batch_max: int = 500,
        concurrency: int = 2,
        timeout: float = 2.0,
        lanes: Sequence[int] | None = None,
    ) -> None:
        """``lanes``: the spend lane of each concurrent commit (distinct; by default
        ``0 .. concurrency - 1``)."""
        self.pool = pool
        self.metrics = metrics
        self.batch_max = batch_max
        self.concurrency = concurrency
        self.lanes = tuple(range(concurrency)) if lanes is None else tuple(lanes)
        if len(self.lanes) != concurrency or len(set(self.lanes)) != concurrency:
            raise ValueError(f"{concurrency} concurrent commits need as many distinct lanes")
        self.timeout = timeout
        self._queue: collections.deque[Batch] = collections.deque()
        self._ready = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        # after a failure to reach Postgres, notices are answered "unavailable" at once for
        # ``fail_fast`` seconds (not each after waiting ``timeout``); then a batch tries again
        self.fail_fast = min(0.5, timeout)
        self._down_until = 0.0

    def start(self) -> None:
        for lane in self.lanes:
            self._workers.append(
                asyncio.create_task(self._work(lane), name=f"tracker-commit-lane-{lane}")
            )

    async def submit(self, rows: list[NoticeRow]) -> Outcomes:
        """The outcome of each row by key, once committed; raises ``Unavailable`` when the
        batch could not be committed (nothing of it counted)."""
        batch, ticket = self.enqueue(rows)
        await batch.future
        return self.outcome(batch, ticket, rows)

    def enqueue(self, rows: list[NoticeRow]) -> tuple[Batch, int]:
        """Add ``rows`` to the next commit: their batch (await its ``future``, then read them
        with ``outcome``) and their ticket in it. Raises ``Unavailable`` at once when the
        tracker is stopping or Postgres was unreachable a moment ago."""
        if self._closing or not self._workers:
            raise Unavailable("the tracker is shutting down")
        if time.monotonic() < self._down_until:
            raise Unavailable("Postgres was unreachable a moment ago")
        queue = self._queue
        batch = queue[-1] if queue else None  # the newest batch, not yet taken by a commit
        if batch is None or (batch.rows and len(batch.rows) + len(rows) > self.batch_max):
            batch = Batch(SharedFuture(loop=asyncio.get_running_loop()))
            queue.append(batch)
        ticket = len(batch.groups)
        batch.groups.append(rows)
        batch.rows += rows
        owners = batch.owners
        for row in rows:
            owners.setdefault((row.txid, row.kind), ticket)
        self._ready.set()
        return batch, ticket

    @staticmethod
    def outcome(batch: Batch, ticket: int, rows: list[NoticeRow]) -> Outcomes:
        """The outcome of each of ``rows`` (enqueued as ``ticket``) once ``batch`` is answered;
        raises ``Unavailable`` when they could not be committed (nothing of them counted)."""
        if batch.error:
            raise Unavailable(batch.error)
        failed = batch.failed.get(ticket) if batch.failed else None
        if failed is not None:
            raise Unavailable(failed)
        results = batch.future.result()
        owners = batch.owners
        # each key's result goes to its first copy in the batch; any other copy is a duplicate
        outcome: Outcomes = {}
        for row in rows:
            key = (row.txid, row.kind)
            outcome[key] = results.get(key, _NOT_COUNTED) if owners[key] == ticket else _NOT_COUNTED
        return outcome

    @staticmethod
    def result(batch: Batch, ticket: int, row: NoticeRow) -> RowResult:
        """``outcome`` of one of the rows enqueued as ``ticket``."""
        if batch.error:
            raise Unavailable(batch.error)
        if batch.failed:
            failed = batch.failed.get(ticket)
            if failed is not None:
                raise Unavailable(failed)
        key = (row.txid, row.kind)
        if batch.owners[key] != ticket:
            return _NOT_COUNTED
        return batch.future.result().get(key, _NOT_COUNTED)

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._ready.set()
        if self._workers:
            await asyncio.wait(self._workers, timeout=self.timeout * 2 + 1)
        for worker in self._workers:
            await cancel_and_wait(worker)
        for batch in self._queue:
            if not batch.future.done():
                batch.error = "the tracker stopped"
                batch.future.set_result({})
        self._queue.clear()

    def _take(self) -> Batch | None:
        batch = self._queue.popleft() if self._queue else None
        if not self._queue:
            self._ready.clear()
        return batch

    async def _work(self, lane: int) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._ready.wait()
                continue
            batch = self._take()
            if batch is not None:
                await self._commit_batch(batch, lane)

    async def _commit_batch(self, batch: Batch, lane: int) -> None:
        """Commit ``batch`` and answer all its notices at once (its one future)."""
        try:
            results = await self._commit_rows(batch.rows, lane)
        except Unavailable as exc:
            batch.error = str(exc)
            results = {}
        except asyncpg.PostgresError as exc:
            # bad data in one notice: commit each submitter's rows alone, so that it fails alone
            self.metrics.batch_errors.labels("data").inc()
            log.warning("batch of %d failed (%s); committing one by one", len(batch.rows), exc)
            results = {}
            if len(batch.groups) == 1:
                batch.failed[0] = f"cannot be committed: {exc}"
            for ticket, group in enumerate(batch.groups if len(batch.groups) > 1 else ()):
                try:
                    results.update(await self._commit_rows(group, lane))
                except Unavailable as alone:
                    batch.failed[ticket] = str(alone)
                except asyncpg.PostgresError as alone:
                    self.metrics.batch_errors.labels("data").inc()
                    batch.failed[ticket] = f"cannot be committed: {alone}"
        if not batch.future.done():
            batch.future.set_result(results)

    async def _commit_rows(self, rows: list[NoticeRow], lane: int) -> Outcomes:
        """``_commit`` of ``rows``, timed and counted in the batch metrics; on ``Unavailable``
        notices are answered so at once for ``fail_fast`` seconds."""
        started = time.perf_counter()
        try:
            results = await self._commit(rows, lane)
        except Unavailable:
            self._down_until = time.monotonic() + self.fail_fast
            raise
        self.metrics.batch_size.observe(len(rows))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return results

    async def _commit(self, rows: list[NoticeRow], lane: int) -> Outcomes:
        argument = batch_argument(rows)
        for attempt in range(3):
            try:
                async with asyncio.timeout(self.timeout):
                    async with self.pool.acquire() as conn:
                        records = await conn.fetch(BATCH_SQL, argument, lane)
            except _RETRYABLE:
                self.metrics.batch_errors.labels("retry").inc()
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            except _CONNECTION_ERRORS as exc:
                self.metrics.batch_errors.labels("unavailable").inc()
                raise Unavailable(f"Postgres unavailable: {type(exc).__name__}") from exc
            # (txid, kind, cost_micros, priced) by position: one RowResult per distinct answer
            results: Outcomes = {}
            made: dict[tuple[int, bool], RowResult] = {}
            for txid, kind, cost, priced in records:
                result = made.get((cost, priced))
                if result is None:
                    result = made[(cost, priced)] = RowResult(priced, cost, not priced)
                results[(txid, kind)] = result
            return results
        raise Unavailable("the batch kept conflicting with another transaction")


class CatalogSource:
    """The campaign catalog, read from Postgres and read again every ``refresh`` seconds, or at
    once (at most once per ``min_interval``) when a notice names something it does not know."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: TrackerMetrics,
        *,
        refresh: float = 30.0,
        min_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.refresh = refresh
        self.min_interval = min_interval
        self.catalog = Catalog()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Unavailable):
            await self.reload()
        self._task = asyncio.create_task(self._loop(), name="tracker-catalog")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def reload(self, unless_newer_than: float | None = None) -> Catalog:
        """Read the catalog again; with ``unless_newer_than``, not when another caller has read
        it since that time (a burst of notices for a new campaign reads it once)."""
        async with self._lock:
            if unless_newer_than is not None and self.catalog.loaded_at > unless_newer_than:
                return self.catalog
            try:
                async with asyncio.timeout(10), self.pool.acquire() as conn:
                    snapshot = await load_snapshot(conn)
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                raise Unavailable(f"cannot read the campaigns: {type(exc).__name__}") from exc
            self.catalog = Catalog.from_snapshot(snapshot, time.monotonic())
            self.metrics.catalog_age.set(0)
            return self.catalog

    async def ensure(self, campaign_id: int, creative_id: int, currency: str) -> Catalog:
        """The catalog, read again first when it lacks what a notice names: at once, or once
        ``min_interval`` seconds have passed since the last read (a campaign created just after
        it is then found; a burst of notices for a new campaign reads it once)."""
        catalog = self.catalog
        if catalog.knows(campaign_id, creative_id, currency):
            return catalog
        wait = catalog.loaded_at + self.min_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return await self.reload(unless_newer_than=catalog.loaded_at)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload()
            except Unavailable as exc:
                log.warning("%s", exc)
                self.metrics.catalog_age.set(time.monotonic() - self.catalog.loaded_at)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection's reset: nothing beyond asyncpg's own (an open transaction rolled
    back, listeners removed). The tracker leaves no session state on its connections (no SET,
    LISTEN, cursor outside a transaction or session advisory lock: the pause round's lock is a
    transaction's), so the default reset's statement (``RESET ALL; CLOSE ALL; UNLISTEN *;
    SELECT pg_advisory_unlock_all()``) would be a round trip per group commit for nothing."""


async def create_pool(dsn: str, size: int, opened: int = 1) -> asyncpg.Pool:
    """Up to ``size`` connections, ``opened`` of them at once (the group commit's: opening one
    costs the loop milliseconds, TLS offer included, better spent at start than in the first
    burst of notices)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min(opened, size),
        max_size=size,
        server_settings=SERVER_SETTINGS,
        reset=_keep_session,
    )
    return pool


async def purge(pool: asyncpg.Pool, before: float) -> int:
    """Forget dedupe rows recorded before ``before`` (no signed URL reaches them any more)."""
    async with pool.acquire() as conn:
        status = await conn.execute(
            "DELETE FROM tracker_notices WHERE recorded_at < $1", _timestamp(before)
        )
    return int(status.split()[-1])


FOLD_SQL: Final = """
WITH folded AS (
    DELETE FROM campaign_spend WHERE day < $1 AND lane <> 0
    RETURNING campaign_id, day, spent_micros, impressions, updated_at
),
campaigns AS (
    INSERT INTO campaign_spend AS s (campaign_id, day, lane, spent_micros, impressions,
                                     updated_at)
    SELECT campaign_id, day, 0, sum(spent_micros), sum(impressions), max(updated_at)
    FROM folded GROUP BY campaign_id, day ORDER BY campaign_id, day
    ON CONFLICT (campaign_id, day, lane) DO UPDATE
        SET spent_micros = s.spent_micros + EXCLUDED.spent_micros,
            impressions = s.impressions + EXCLUDED.impressions,
            updated_at = greatest(s.updated_at, EXCLUDED.updated_at)
),
creatives_folded AS (
    DELETE FROM tracker_creative_spend WHERE day < $1 AND lane <> 0
    RETURNING creative_id, campaign_id, day, spent_micros, impressions
),
creatives AS (
    INSERT INTO tracker_creative_spend AS s (creative_id, campaign_id, day, lane,
                                             spent_micros, impressions)
    SELECT creative_id, min(campaign_id), day, 0, sum(spent_micros), sum(impressions)
    FROM creatives_folded GROUP BY creative_id, day ORDER BY creative_id, day
    ON CONFLICT (creative_id, day, lane) DO UPDATE
        SET spent_micros = s.spent_micros + EXCLUDED.spent_micros,
            impressions = s.impressions + EXCLUDED.impressions
)
SELECT (SELECT count(*) FROM folded) + (SELECT count(*) FROM creatives_folded)
"""


async def fold_lanes(pool: asyncpg.Pool, before: date) -> int:
    """Fold the spend lanes of the days before ``before`` into lane 0, in one transaction (the
    sums every reader sees do not change): a campaign's past days come back to one row each.
    Returns how many lane rows were folded. A billing notice for such a day arriving later adds
    to its lane again, to be folded next time."""
    async with pool.acquire() as conn:
        return int(await conn.fetchval(FOLD_SQL, before))
