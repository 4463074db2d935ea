"""Postgres: the cost-per-activation rule's reads and writes (asyncpg).

Every ``interval`` seconds of fleet time, one tracker (the holder of a transaction-level
advisory lock; the others skip that round) reads spend and attributed activations per campaign
and creative, runs ``tracker.cpa.evaluate`` and pauses what it says: the status is written to
the config tables (so the change reaches the bidders like any other config change) with
``paused_by`` and ``pause_reason``, and a row in ``status_changes``.
"""

from __future__ import annotations

import logging
from typing import Final

import asyncpg

from tracker.cpa import TARGETED_GOALS, Pause, Rule, Standing, evaluate
from tracker.metrics import TrackerMetrics

log = logging.getLogger("tracker.pauses")

PAUSED_BY: Final = "tracker:cpa-rule"
LOCK_KEY: Final = 0x72746266_63706172  # "rtbfcpar"

_STANDINGS_SQL: Final = """
WITH activations AS (
    SELECT i.campaign_id, i.creative_id, count(*) AS n
    FROM tracker_installs i JOIN campaigns c ON c.id = i.campaign_id
    WHERE i.attributed AND c.goal_event = ''
    GROUP BY 1, 2
    UNION ALL
    SELECT e.campaign_id, e.creative_id, count(*) AS n
    FROM tracker_events e JOIN campaigns c ON c.id = e.campaign_id
    WHERE e.attributed AND c.goal_event <> '' AND e.name = c.goal_event
    GROUP BY 1, 2
),
spend AS (
    SELECT creative_id, min(campaign_id) AS campaign_id, sum(spent_micros) AS spent
    FROM tracker_creative_spend GROUP BY creative_id
)
SELECT 'creative' AS level, cr.id AS entity_id, cr.campaign_id, cr.status,
       coalesce(s.spent, 0)::bigint AS spent,
       coalesce((SELECT sum(n) FROM activations a WHERE a.creative_id = cr.id), 0)::bigint AS n,
       c.goal_type, c.goal_price_micros
FROM creatives cr JOIN campaigns c ON c.id = cr.campaign_id
LEFT JOIN spend s ON s.creative_id = cr.id
WHERE cr.status = 'active' AND c.status = 'active'
UNION ALL
SELECT 'campaign', c.id, c.id, c.status,
       coalesce((SELECT sum(spent_micros) FROM campaign_spend cs WHERE cs.campaign_id = c.id),
                0)::bigint,
       coalesce((SELECT sum(n) FROM activations a WHERE a.campaign_id = c.id), 0)::bigint,
       c.goal_type, c.goal_price_micros
FROM campaigns c WHERE c.status = 'active'
"""


def standing(row: asyncpg.Record) -> Standing:
    target = int(row["goal_price_micros"]) if row["goal_type"] in TARGETED_GOALS else 0
    return Standing(
        level=row["level"],
        entity_id=int(row["entity_id"]),
        campaign_id=int(row["campaign_id"]),
        spend_micros=int(row["spent"]),
        activations=int(row["n"]),
        target_micros=target,
        status=row["status"],
    )


async def read_standings(conn: asyncpg.Connection) -> list[Standing]:
    return [standing(r) for r in await conn.fetch(_STANDINGS_SQL)]


async def apply(conn: asyncpg.Connection, pause: Pause) -> bool:
    """Pause one campaign or creative (if still active) and record it; False when it was not
    active any more."""
    table = "campaigns" if pause.level == "campaign" else "creatives"
    async with conn.transaction():
        changed = await conn.fetchval(
            f"UPDATE {table} SET status = 'paused', paused_by = $2, pause_reason = $3 "
            "WHERE id = $1 AND status = 'active' RETURNING id",
            pause.entity_id,
            PAUSED_BY,
            pause.reason,
        )
        if changed is None:
            return False
        await conn.execute(
            "INSERT INTO status_changes (entity, entity_id, old_status, new_status, changed_by, "
            "reason) VALUES ($1, $2, 'active', 'paused', $3, $4)",
            pause.level,
            pause.entity_id,
            PAUSED_BY,
            pause.reason,
        )
    return True


class CpaRule:
    """One evaluation per ``run_once``; the streaks live here between evaluations."""

    def __init__(self, pool: asyncpg.Pool, rule: Rule, metrics: TrackerMetrics) -> None:
        self.pool = pool
        self.rule = rule
        self.metrics = metrics
        self.streaks: dict[tuple[str, int], int] = {}

    async def run_once(self) -> list[Pause]:
        """The pauses made now (empty when another tracker holds the rule's lock)."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
                    return []
                standings = await read_standings(conn)
            pauses, self.streaks = evaluate(standings, self.streaks, self.rule)
            made = []
            for pause in pauses:
                if await apply(conn, pause):
                    self.metrics.pauses.labels(pause.level).inc()
                    log.warning("paused %s %d: %s", pause.level, pause.entity_id, pause.reason)
                    made.append(pause)
            return made
