"""The Postgres adapter of the writer: one connection, one transaction per batch.

A batch is applied at most once: its (logger id, flush sequence) row in ``bidlogger_batches`` is
inserted first, in the same transaction, and a batch whose row exists is skipped whole. Inside:
the aggregates are COPYed into a session-local staging table and merged into ``bidlogger_minute``
with one ``INSERT ... ON CONFLICT DO UPDATE`` (counts add up); coverage, positions, losses and the
hours to roll up follow; the raw sample, already a binary COPY stream (``bidlogger.copyfmt``), is
sent as it is: into its day's partition when the batch spans one day (as it nearly always does),
else into ``bidlogger_raw``, which routes each row. Day partitions are created, when missing,
before the transaction.

Every failure to reach or use Postgres is a :class:`StoreError`; the caller keeps the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from bidlogger.aggregate import HOUR, Batch
from bidlogger.copyfmt import RAW_COLUMNS, encode_raw
from bidlogger.errors import BatchRejected, StoreError
from bidlogger.positions import Position

log = logging.getLogger("bidlogger.store")

_STAGE = "bidlogger_stage"
DAY_MICROS = 86_400 * 1_000_000
# what Postgres (or the encoding of a value for it) refuses for the batch's content, not for
# being unreachable: the same batch would be refused again
_REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    OverflowError,
    ValueError,
)
_AGG_COLUMNS = (
    "minute",
    "shard",
    "campaign_id",
    "creative_id",
    "event_type",
    "events",
    "spend_micros",
    "p_click_e9",
    "joined",
)
_MERGE = f"""
INSERT INTO bidlogger_minute ({", ".join(_AGG_COLUMNS)})
SELECT {", ".join(_AGG_COLUMNS)} FROM {_STAGE}
ON CONFLICT (minute, shard, campaign_id, creative_id, event_type) DO UPDATE SET
    events = bidlogger_minute.events + EXCLUDED.events,
    spend_micros = bidlogger_minute.spend_micros + EXCLUDED.spend_micros,
    p_click_e9 = bidlogger_minute.p_click_e9 + EXCLUDED.p_click_e9,
    joined = bidlogger_minute.joined + EXCLUDED.joined
"""
_POSITIONS = """
INSERT INTO bidlogger_positions AS p (logger_id, publisher_id, topic, incarnation, seq, total)
SELECT $1, x.publisher_id, x.topic, x.incarnation, x.seq, x.total
FROM unnest($2::text[], $3::text[], $4::numeric[], $5::bigint[], $6::bigint[])
    AS x (publisher_id, topic, incarnation, seq, total)
ON CONFLICT (logger_id, publisher_id, topic) DO UPDATE SET
    incarnation = EXCLUDED.incarnation, seq = EXCLUDED.seq, total = EXCLUDED.total,
    updated_at = now()
"""


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def day_of(epoch: float) -> date:
    return datetime.fromtimestamp(epoch, UTC).date()


def day_partition(table: str, day: date) -> str:
    """The name ``bidlogger_day_partition`` gives the partition of ``day``."""
    return f"{table}_{day:%Y%m%d}"


def days_between(first: float, last: float) -> list[date]:
    """Every UTC day from the one of ``first`` to the one of ``last`` (epoch seconds)."""
    start, end = day_of(first), day_of(last)
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _days_of_micros(first: int, last: int) -> list[date]:
    """Every UTC day from the one of ``first`` to the one of ``last`` (epoch microseconds, the
    very values the COPY stream holds: no float rounding between the two)."""
    epoch = date(1970, 1, 1)
    start, end = first // DAY_MICROS, last // DAY_MICROS
    return [epoch + timedelta(days=d) for d in range(start, end + 1)]


def _jsonb_encode(data: bytes) -> bytes:
    return b"\x01" + data  # jsonb's binary format: a version byte, then the JSON text


def _jsonb_decode(data: bytes) -> bytes:
    return data[1:]


class _Days:
    """Day partitions known to exist, and the lock under which they are made."""

    def __init__(self) -> None:
        self.made: set[tuple[str, date]] = set()
        self.lock = asyncio.Lock()


class _BeforeFailed(Exception):
    """The batch before this one was not applied (this one is rolled back, and retried)."""


class Store:
    """``connect()``, then ``apply(batch)``; reconnects on the next call after a failure."""

    def __init__(
        self, dsn: str, *, connect_timeout: float = 5.0, days: _Days | None = None
    ) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._shared = days or _Days()  # stores of one writer share the partitions made
        self._days = self._shared.made

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> Any:
        if self.connected:
            return self._conn
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
            await conn.set_type_codec(
                "jsonb",
                schema="pg_catalog",
                encoder=_jsonb_encode,
                decoder=_jsonb_decode,
                format="binary",
            )
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
                "(LIKE bidlogger_minute) ON COMMIT DELETE ROWS"
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot connect to Postgres: {exc}") from exc
        self._conn = conn
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()

    def terminate(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _fail(self, exc: BaseException, what: str) -> StoreError:
        self.terminate()
        self._days.clear()  # a partition dropped since (retention) is created again
        return StoreError(f"{what}: {exc}")

    async def ensure_days(self, table: str, days: Iterable[date]) -> None:
        wanted = sorted(set(days) - {d for t, d in self._days if t == table})
        if not wanted:
            return
        async with self._shared.lock:  # two connections never create one partition at once
            await self._ensure_days(table, wanted)

    async def _ensure_days(self, table: str, days: list[date]) -> None:
        conn = await self.connect()
        for day in days:
            if (table, day) in self._days:
                continue
            try:
                await conn.execute("SELECT bidlogger_day_partition($1, $2)", table, day)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise await self._fail(
                    exc, f"cannot create the {table} partition of {day}"
                ) from exc
            self._days.add((table, day))

    async def apply(self, batch: Batch, before: Awaitable[object] | None = None) -> bool:
        """Apply ``batch`` once; False when it had been applied already (nothing changed).

        ``before``: the apply of the batch before it, on another connection. This batch's raw
        rows are copied while that one runs; its aggregates, positions and commit wait for it
        (so they land in flush order, and a failure there rolls this one back too)."""
        if batch.rows:
            minutes = [r.minute for r in batch.rows]
            await self.ensure_days("bidlogger_minute", days_between(min(minutes), max(minutes)))
        raw_copy, raw_table = batch.raw_copy, "bidlogger_raw"
        if batch.raw and not raw_copy:  # spooled by an earlier version, or refused at the flush
            try:
                raw_copy, first, last = encode_raw(batch.raw, batch.logger_id, batch.seq)
            except OverflowError as exc:
                raise BatchRejected(f"batch {batch.seq} refused: {exc}") from exc
        else:
            first, last = batch.raw_first, batch.raw_last
        if raw_copy:
            days = _days_of_micros(first, last)
            await self.ensure_days("bidlogger_raw", days)
            if len(days) == 1:  # straight into the day's partition: no routing per row
                raw_table = day_partition("bidlogger_raw", days[0])
        conn = await self.connect()
        try:
            async with conn.transaction():
                fresh = await conn.fetchval(
                    "INSERT INTO bidlogger_batches (logger_id, flush_seq, shard, events, "
                    "raw_events) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
                    batch.logger_id,
                    batch.seq,
                    batch.shard,
                    batch.events,
                    batch.raw_count,
                )
                if fresh is None:
                    return False
                if raw_copy:
                    await conn.copy_to_table(
                        raw_table,
                        source=memoryview(raw_copy),  # not bytes: asyncpg takes bytes for a path
                        columns=RAW_COLUMNS,
                        format="binary",
                    )
                if before is not None:
                    try:
                        await before
                    except Exception as exc:  # rolled back: the writer tries both again
                        raise _BeforeFailed(str(exc)) from exc
                await self._write(conn, batch)
        except _BeforeFailed as exc:
            what = f"batch {batch.seq} not applied: the one before it failed ({exc})"
            raise StoreError(what) from exc
        except _REFUSED as exc:
            self.terminate()  # a COPY broken off mid-stream: start the next on a fresh session
            raise BatchRejected(f"batch {batch.seq} refused: {exc}") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise await self._fail(exc, f"batch {batch.seq} not applied") from exc
        return True

    async def _write(self, conn: Any, batch: Batch) -> None:
        shard = batch.shard
        if batch.rows:
            minutes: dict[int, datetime] = {}
            records = []
            for r in batch.rows:
                minute = minutes.get(r.minute)
                if minute is None:
                    minute = minutes[r.minute] = utc(r.minute)
                records.append(
                    (
                        minute,
                        shard,
                        r.campaign_id,
                        r.creative_id,
                        r.event_type,
                        r.events,
                        r.spend_micros,
                        r.p_click_e9,
                        r.joined,
                    )
                )
            await conn.copy_records_to_table(_STAGE, records=records, columns=_AGG_COLUMNS)
            await conn.execute(_MERGE)
            hours = sorted({m // HOUR * HOUR for m in minutes})
            await conn.execute(
                "INSERT INTO bidlogger_dirty (grain, period, shard) "
                "SELECT 'hour', h, $2 FROM unnest($1::timestamptz[]) AS h ON CONFLICT DO NOTHING",
                [utc(h) for h in hours],
                shard,
            )
        if batch.coverage:
            await conn.execute(
                "INSERT INTO bidlogger_coverage "
                "(grain, period, shard, partitions_covered, partitions_total) "
                "SELECT 'minute', m, $2, $3, $4 FROM unnest($1::timestamptz[]) AS m "
                "ON CONFLICT DO NOTHING",
                [utc(m) for m in batch.coverage],
                shard,
                batch.partitions_covered,
                batch.partitions_total,
            )
        if batch.positions:
            ps = batch.positions
            await conn.execute(
                _POSITIONS,
                batch.logger_id,
                [p.publisher_id for p in ps],
                [p.topic for p in ps],
                [p.incarnation for p in ps],
                [p.seq for p in ps],
                [p.total for p in ps],
            )
        if batch.losses:
            await conn.executemany(
                "INSERT INTO bidlogger_losses "
                "(logger_id, flush_seq, cause, publisher_id, topic, events) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (batch.logger_id, batch.seq, x.cause, x.publisher_id, x.topic, x.events)
                    for x in batch.losses
                ],
            )

    async def positions(self, logger_id: str) -> list[Position]:
        """What this logger had consumed as of its last applied batch."""
        conn = await self.connect()
        try:
            rows = await conn.fetch(
                "SELECT publisher_id, topic, incarnation, seq, total FROM bidlogger_positions "
                "WHERE logger_id = $1",
                logger_id,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise await self._fail(exc, "cannot read positions") from exc
        return [
            Position(r["publisher_id"], r["topic"], int(r["incarnation"]), r["seq"], r["total"])
            for r in rows
        ]

    async def last_seq(self, logger_id: str) -> int:
        conn = await self.connect()
        try:
            value = await conn.fetchval(
                "SELECT coalesce(max(flush_seq), 0) FROM bidlogger_batches WHERE logger_id = $1",
                logger_id,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise await self._fail(exc, "cannot read the last flush sequence") from exc
        return int(value)
