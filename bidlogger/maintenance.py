"""Roll-ups, retention and the creative feed: the job one logger at a time runs.

The loggers compete for a session-level Postgres advisory lock; the holder, every interval:

1. recomputes the hours marked dirty by recent batches from the minute tier (an overwrite, so
   running it twice changes nothing), with their coverage, and marks their days dirty;
2. recomputes those days from the hourly tier;
3. drops the minute and raw day partitions older than the raw retention, deletes hourly rows
   past theirs, daily rows past theirs (never, by default), and old batch identities and losses;
4. recomputes ``creative_stats`` (fleet impressions and clicks per creative over the feed
   window) and returns it for publishing.

"Now" for retention and the feed window is event time: the latest minute any logger covered.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from bidlogger.errors import StoreError

log = logging.getLogger("bidlogger.maintenance")

_PARTITION = re.compile(r"^(bidlogger_minute|bidlogger_raw)_(\d{8})$")

_TIER_COLUMNS = "campaign_id, creative_id, event_type"
_SUMS = (
    "sum(events)::bigint, sum(spend_micros)::bigint, sum(p_click_e9)::bigint, sum(joined)::bigint"
)
_OVERWRITE = (
    "events = EXCLUDED.events, spend_micros = EXCLUDED.spend_micros, "
    "p_click_e9 = EXCLUDED.p_click_e9, joined = EXCLUDED.joined"
)

_ROLL_HOURS = f"""
WITH dirty AS (
    DELETE FROM bidlogger_dirty WHERE grain = 'hour' RETURNING period, shard
), hours AS (SELECT DISTINCT period, shard FROM dirty),
rolled AS (
    INSERT INTO bidlogger_hourly (hour, shard, {_TIER_COLUMNS},
                                  events, spend_micros, p_click_e9, joined)
    SELECT h.period, m.shard, m.campaign_id, m.creative_id, m.event_type, {_SUMS}
    FROM hours h JOIN bidlogger_minute m
      ON m.shard = h.shard AND m.minute >= h.period AND m.minute < h.period + interval '1 hour'
    GROUP BY h.period, m.shard, m.campaign_id, m.creative_id, m.event_type
    ON CONFLICT (hour, shard, campaign_id, creative_id, event_type) DO UPDATE SET {_OVERWRITE}
    RETURNING 1
), covered AS (
    INSERT INTO bidlogger_coverage (grain, period, shard, partitions_covered, partitions_total)
    SELECT DISTINCT 'hour', date_trunc('hour', c.period), c.shard, c.partitions_covered,
           c.partitions_total
    FROM hours h JOIN bidlogger_coverage c
      ON c.grain = 'minute' AND c.shard = h.shard
     AND c.period >= h.period AND c.period < h.period + interval '1 hour'
    ON CONFLICT DO NOTHING
    RETURNING 1
), days AS (
    INSERT INTO bidlogger_dirty (grain, period, shard)
    SELECT DISTINCT 'day', date_trunc('day', period, 'UTC'), shard FROM hours
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM hours), (SELECT count(*) FROM rolled)
"""

_ROLL_DAYS = f"""
WITH dirty AS (
    DELETE FROM bidlogger_dirty WHERE grain = 'day' RETURNING period, shard
), days AS (SELECT DISTINCT period, shard FROM dirty),
rolled AS (
    INSERT INTO bidlogger_daily (day, shard, {_TIER_COLUMNS},
                                 events, spend_micros, p_click_e9, joined)
    SELECT (d.period AT TIME ZONE 'UTC')::date, h.shard, h.campaign_id, h.creative_id,
           h.event_type, {_SUMS}
    FROM days d JOIN bidlogger_hourly h
      ON h.shard = d.shard AND h.hour >= d.period AND h.hour < d.period + interval '1 day'
    GROUP BY d.period, h.shard, h.campaign_id, h.creative_id, h.event_type
    ON CONFLICT (day, shard, campaign_id, creative_id, event_type) DO UPDATE SET {_OVERWRITE}
    RETURNING 1
), covered AS (
    INSERT INTO bidlogger_coverage (grain, period, shard, partitions_covered, partitions_total)
    SELECT DISTINCT 'day', d.period, c.shard, c.partitions_covered, c.partitions_total
    FROM days d JOIN bidlogger_coverage c
      ON c.grain = 'hour' AND c.shard = d.shard
     AND c.period >= d.period AND c.period < d.period + interval '1 day'
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM days), (SELECT count(*) FROM rolled)
"""

_FEED = """
SELECT creative_id, max(campaign_id) AS campaign_id,
       sum(events) FILTER (WHERE event_type = 'impression')::bigint AS impressions,
       sum(events) FILTER (WHERE event_type = 'click')::bigint AS clicks,
       bool_or(estimated) AS estimated
FROM bidlogger_hourly_fleet
WHERE hour >= $1 AND event_type IN ('impression', 'click') AND creative_id <> 0
GROUP BY creative_id
"""


@dataclass(frozen=True)
class Retention:
    raw_days: int
    hourly_days: int
    daily_days: int  # 0: for good


@dataclass
class MaintenanceReport:
    hours_rolled: int = 0
    days_rolled: int = 0
    partitions_dropped: int = 0
    rows_deleted: int = 0
    creatives: int = 0
    event_time: float = 0.0


def cutoff_day(now: float, days: int) -> date:
    """The first day kept when ``days`` are kept, as of event time ``now``."""
    today = datetime.fromtimestamp(now, UTC).date()
    return today - timedelta(days=days - 1)


def partitions_to_drop(names: list[str], keep_from: date) -> list[str]:
    """Day partitions (``bidlogger_raw_20261207``) of days before ``keep_from``."""
    out = []
    for name in names:
        match = _PARTITION.match(name)
        if match is None:
            continue
        day = datetime.strptime(match.group(2), "%Y%m%d").date()
        if day < keep_from:
            out.append(name)
    return sorted(out)


class Maintenance:
    """Holds its own Postgres session (the advisory lock lives as long as it)."""

    def __init__(self, dsn: str, *, lock_key: int, retention: Retention, feed_days: int) -> None:
        self.dsn = dsn
        self.lock_key = lock_key
        self.retention = retention
        self.feed_days = feed_days
        self._conn: Any = None
        self.leading = False

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.leading = False
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()

    async def _lead(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self.leading = False
            self._conn = await asyncpg.connect(self.dsn, timeout=5)
        if not self.leading:
            self.leading = bool(
                await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key)
            )
        return self.leading

    async def run(self) -> tuple[MaintenanceReport, dict[int, tuple[int, int, bool]]] | None:
        """One pass if this logger leads (else None): the report and the feed's counts
        (creative id -> impressions, clicks, estimated)."""
        try:
            if not await self._lead():
                return None
            return await self._pass(self._conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            await self.close()
            raise StoreError(f"maintenance failed: {exc}") from exc

    async def _pass(self, conn: Any) -> tuple[MaintenanceReport, dict[int, tuple[int, int, bool]]]:
        report = MaintenanceReport()
        async with conn.transaction():
            row = await conn.fetchrow(_ROLL_HOURS)
            report.hours_rolled = int(row[0])
            row = await conn.fetchrow(_ROLL_DAYS)
            report.days_rolled = int(row[0])
        latest = await conn.fetchval(
            "SELECT extract(epoch FROM max(period))::float8 FROM bidlogger_coverage "
            "WHERE grain = 'minute'"
        )
        if latest is None:
            return report, {}
        now = float(latest)
        report.event_time = now
        await self._retain(conn, now, report)
        feed = await self._feed(conn, now)
        report.creatives = len(feed)
        return report, feed

    async def _retain(self, conn: Any, now: float, report: MaintenanceReport) -> None:
        r = self.retention
        names = [
            row[0]
            for row in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname IN ('bidlogger_minute', 'bidlogger_raw')"
            )
        ]
        keep_from = cutoff_day(now, r.raw_days)
        for name in partitions_to_drop(names, keep_from):
            if name.startswith("bidlogger_minute_"):
                # never drop minutes whose hours still wait for their roll-up
                pending = await conn.fetchval(
                    "SELECT count(*) FROM bidlogger_dirty WHERE grain = 'hour' AND period < $1",
                    _midnight(keep_from),
                )
                if pending:
                    continue
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
            report.partitions_dropped += 1
            log.info("dropped %s (older than %s)", name, keep_from)
        deletes = [
            ("DELETE FROM bidlogger_coverage WHERE grain = 'minute' AND period < $1", r.raw_days),
            ("DELETE FROM bidlogger_hourly WHERE hour < $1", r.hourly_days),
            ("DELETE FROM bidlogger_coverage WHERE grain = 'hour' AND period < $1", r.hourly_days),
            ("DELETE FROM bidlogger_losses WHERE detected_at < $1", r.hourly_days),
        ]
        if r.daily_days:
            deletes += [
                ("DELETE FROM bidlogger_daily WHERE day < $1::timestamptz::date", r.daily_days),
                (
                    "DELETE FROM bidlogger_coverage WHERE grain = 'day' AND period < $1",
                    r.daily_days,
                ),
            ]
        for sql, days in deletes:
            status = await conn.execute(sql, _midnight(cutoff_day(now, days)))
            report.rows_deleted += int(status.rsplit(" ", 1)[-1])
        # batch identities guard against replays of the spool, which lasts hours, not days
        status = await conn.execute(
            "DELETE FROM bidlogger_batches WHERE applied_at < now() - make_interval(days => $1)",
            r.raw_days,
        )
        report.rows_deleted += int(status.rsplit(" ", 1)[-1])

    async def _feed(self, conn: Any, now: float) -> dict[int, tuple[int, int, bool]]:
        since = datetime.fromtimestamp(now, UTC) - timedelta(days=self.feed_days)
        rows = await conn.fetch(_FEED, since)
        feed: dict[int, tuple[int, int, bool]] = {}
        records = []
        for r in rows:
            cid, imps, clicks = (
                int(r["creative_id"]),
                int(r["impressions"] or 0),
                int(r["clicks"] or 0),
            )
            feed[cid] = (imps, clicks, bool(r["estimated"]))
            records.append((cid, int(r["campaign_id"]), imps, clicks, bool(r["estimated"])))
        async with conn.transaction():
            await conn.execute("DELETE FROM creative_stats")
            await conn.copy_records_to_table(
                "creative_stats",
                records=records,
                columns=("creative_id", "campaign_id", "impressions", "clicks", "estimated"),
            )
        return feed


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
