"""The bid loggers' per-campaign counts beside the simulator's own, as an operator reads them.

After a run the report reads the fleet-wide minute aggregates (``bidlogger_minute_fleet``) from
Postgres, once they have stopped moving (the loggers flush every second), takes away what they
held as the traffic began (a kept data directory holds earlier runs), and compares each
campaign's figures with what the simulator itself saw:

| aggregate event   | figure          | simulator's own                   |
|-------------------|-----------------|-----------------------------------|
| ``bid`` events    | bids            | bids answered (``bids``)          |
| ``impression``    | impressions     | billed impressions (``billed``)   |
| ``click``         | clicks          | clicks on them (``clicks``)       |
| ``billing`` spend | spend (micros)  | spend in the campaign's currency  |

With every partition covered (no figure ``estimated``) impressions, clicks and spend must be
equal exactly; any difference is a problem of the run. A type that no service published (no
row of it at all: the tracker not running) is said to be not compared, never silently passed.
Bids may exceed the simulator's count by the requests it gave up on (a bid the exchange never
received still has its event), never fall short of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

# (label, aggregate event type, aggregate column, simulator's campaign entry key)
EXACT = (
    ("impressions", "impression", "events", "billed"),
    ("clicks", "click", "events", "clicks"),
    ("spend", "billing", "spend_micros", "spend_micros"),
)

_READ = """
SELECT campaign_id, event_type, sum(events)::bigint AS events,
       sum(spend_micros)::bigint AS spend_micros, bool_or(estimated) AS estimated
FROM bidlogger_minute_fleet GROUP BY campaign_id, event_type
"""


@dataclass(frozen=True)
class LoggerCounts:
    """campaign id -> event type -> (events, spend micros); ``estimated``: some figure scaled
    from a sample (not every partition covered)."""

    figures: Mapping[int, Mapping[str, tuple[int, int]]]
    estimated: bool

    def total(self, event_type: str) -> int:
        return sum(f.get(event_type, (0, 0))[0] for f in self.figures.values())

    def minus(self, earlier: LoggerCounts) -> LoggerCounts:
        """What was added since ``earlier`` (a Postgres kept from earlier runs holds theirs)."""
        figures: dict[int, dict[str, tuple[int, int]]] = {}
        for campaign_id, by_type in self.figures.items():
            before = earlier.figures.get(campaign_id, {})
            for event_type, (events, spend) in by_type.items():
                e0, s0 = before.get(event_type, (0, 0))
                if (events - e0, spend - s0) != (0, 0):
                    figures.setdefault(campaign_id, {})[event_type] = (events - e0, spend - s0)
        return LoggerCounts(figures, self.estimated)

    def get(self, campaign_id: int, event_type: str, column: str) -> int:
        events, spend = self.figures.get(campaign_id, {}).get(event_type, (0, 0))
        return events if column == "events" else spend


def counts_from_rows(rows: Iterable[Mapping[str, Any]]) -> LoggerCounts:
    figures: dict[int, dict[str, tuple[int, int]]] = {}
    estimated = False
    for r in rows:
        campaign = figures.setdefault(int(r["campaign_id"]), {})
        campaign[str(r["event_type"])] = (int(r["events"]), int(r["spend_micros"]))
        estimated = estimated or bool(r["estimated"])
    return LoggerCounts(figures, estimated)


async def read_counts(
    dsn: str, *, settle: float = 2.5, timeout: float = 20.0, sleep: Any = asyncio.sleep
) -> LoggerCounts:
    """The aggregates once two reads ``settle`` seconds apart agree (at most ``timeout``)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        started = time.monotonic()
        last = counts_from_rows(await conn.fetch(_READ))
        while time.monotonic() - started < timeout:
            await sleep(settle)
            now = counts_from_rows(await conn.fetch(_READ))
            if now == last:
                break
            last = now
        return last
    finally:
        await conn.close()


@dataclass
class Comparison:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def compare(
    campaigns: list[dict[str, Any]], counts: LoggerCounts, *, requests_given_up: int
) -> Comparison:
    """Each campaign's exact figures, and the bids, against the aggregates."""
    out = Comparison()
    if counts.estimated:
        out.lines.append(
            "bid loggers: some partitions not covered, figures are estimates: not compared"
        )
        return out
    for label, event_type, column, key in EXACT:
        if counts.total(event_type) == 0 and not any(c.get(key) for c in campaigns):
            out.lines.append(f"bid loggers: {label}: no {event_type} events and none simulated")
            continue
        if counts.total(event_type) == 0:
            out.lines.append(
                f"bid loggers: {label}: not compared, no {event_type} events in the aggregates"
                " (is the tracker running?)"
            )
            continue
        wrong = [
            f"campaign {c['id']}: simulator {c.get(key)}, bid loggers "
            f"{counts.get(c['id'], event_type, column)}"
            for c in campaigns
            if key in c and c[key] != counts.get(c["id"], event_type, column)
        ]
        compared = sum(1 for c in campaigns if key in c)
        if wrong:
            out.problems.append(
                f"bid loggers' {label} differ from the simulator's in {len(wrong)} of "
                f"{compared} campaigns ({'; '.join(wrong[:3])})"
            )
        else:
            out.lines.append(
                f"bid loggers: {label} equal the simulator's exactly in all {compared} campaigns"
            )
    sim_bids = sum(int(c.get("bids", 0)) for c in campaigns)
    logged = counts.total("bid")
    if sim_bids <= logged <= sim_bids + requests_given_up:
        out.lines.append(
            f"bid loggers: {logged} bid events for {sim_bids} bids received "
            f"({requests_given_up} requests given up on by the exchange)"
        )
    else:
        out.problems.append(
            f"bid loggers hold {logged} bid events, the simulator received {sim_bids} bids "
            f"and gave up on {requests_given_up} requests"
        )
    return out


async def baseline(dsn: str) -> LoggerCounts | None:
    """The aggregates before the run (None when Postgres cannot be read: said in the report)."""
    try:
        return await read_counts(dsn, settle=0.0, timeout=0.0)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None


async def logger_lines(
    figures: Mapping[str, Any], dsn: str, before: LoggerCounts | None
) -> Comparison:
    """The report's bid-logger lines and problems for a finished run against Postgres ``dsn``:
    the aggregates added since ``before`` (read as the traffic began)."""
    if before is None:
        return Comparison(problems=["bid loggers' aggregates unreadable before the run"])
    try:
        counts = (await read_counts(dsn)).minus(before)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return Comparison(problems=[f"bid loggers' aggregates unreadable: {exc}"])
    req = figures["requests"]
    given_up = int(req["timeouts"]) + int(req["transport_errors"])
    return compare(list(figures["campaigns"]), counts, requests_given_up=given_up)


FIGURE = "bid_loggers"


async def attach(figures: dict[str, Any], dsn: str, before: LoggerCounts | None) -> list[str]:
    """Adds the comparison to ``figures`` (``bid_loggers``) and returns its problems."""
    comparison = await logger_lines(figures, dsn, before)
    figures[FIGURE] = {"lines": comparison.lines, "problems": comparison.problems}
    return comparison.problems


def logger_summary(figures: Mapping[str, Any]) -> list[str]:
    """The summary's lines of the comparison (none when the run had no Postgres to read)."""
    found = figures.get(FIGURE)
    if not found:
        return []
    return [f"Loggers   {line.removeprefix('bid loggers: ')}" for line in found["lines"]]
