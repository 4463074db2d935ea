"""The pacer's Postgres adapter: campaigns and caps, committed spend, opportunity profiles,
and the leadership lock.

Every query is one round trip over all campaigns (arrays in, rows out): a step costs the same
few queries with 20 campaigns or 20,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date

import asyncpg

from fleet.plan import HOURS_PER_WEEK
from pacing.pacer import CampaignBudget, Spend

# Half-life of the opportunity counts (seconds): two weeks of traffic make a profile.
OPPORTUNITY_HALF_LIFE_S = 14 * 86_400.0

_CAMPAIGNS = """
SELECT c.id, c.daily_budget_micros, c.total_budget_micros, c.max_bid_cpm_micros, c.timezone,
       c.pacing_mode, extract(epoch FROM c.flight_start)::float8 AS flight_start,
       extract(epoch FROM c.flight_end)::float8 AS flight_end, c.status,
       coalesce(p.hourly_budget_micros, 0) AS hourly_cap, a.status AS advertiser_status,
       coalesce(t.hours_of_week, '{}') AS hours_of_week
FROM campaigns c
JOIN advertisers a ON a.id = c.advertiser_id
LEFT JOIN campaign_pacing p ON p.campaign_id = c.id
LEFT JOIN targeting t ON t.campaign_id = c.id
ORDER BY c.id
"""

_SPEND = """
SELECT d.id,
       coalesce(sum(s.spent_micros) FILTER (WHERE s.day = d.day), 0)::bigint AS today,
       coalesce(sum(s.spent_micros) FILTER (WHERE s.day < d.day), 0)::bigint AS before
FROM unnest($1::bigint[], $2::date[]) AS d(id, day)
LEFT JOIN campaign_spend s ON s.campaign_id = d.id
GROUP BY d.id
"""

_ADD_OPPORTUNITIES = f"""
INSERT INTO campaign_opportunities AS o (campaign_id, hour_of_week, opportunities, updated_at)
SELECT id, how, n, now() FROM unnest($1::bigint[], $2::smallint[], $3::float8[]) AS u(id, how, n)
WHERE EXISTS (SELECT 1 FROM campaigns c WHERE c.id = u.id)
ON CONFLICT (campaign_id, hour_of_week) DO UPDATE SET
    opportunities = o.opportunities
        * power(0.5, extract(epoch FROM now() - o.updated_at) / {OPPORTUNITY_HALF_LIFE_S})
        + EXCLUDED.opportunities,
    updated_at = now()
"""

_PROFILES = """
SELECT campaign_id, hour_of_week, opportunities
    * power(0.5, extract(epoch FROM now() - updated_at) / $1::float8) AS n
FROM campaign_opportunities
"""


def _campaign(row: asyncpg.Record) -> CampaignBudget:
    active = row["status"] == "active" and row["advertiser_status"] == "active"
    return CampaignBudget(
        campaign_id=int(row["id"]),
        daily_budget=int(row["daily_budget_micros"]),
        total_budget=int(row["total_budget_micros"]),
        max_bid_cpm=int(row["max_bid_cpm_micros"]),
        timezone=str(row["timezone"]),
        pacing_mode=str(row["pacing_mode"]),
        flight_start=row["flight_start"],
        flight_end=row["flight_end"],
        hourly_cap=int(row["hourly_cap"]),
        active=active,
        hours_of_week=tuple(sorted(int(h) for h in row["hours_of_week"])),
    )


async def load_campaigns(conn: asyncpg.Connection) -> list[CampaignBudget]:
    """Every campaign with what pacing needs; inactive ones (or of an inactive advertiser) are
    returned with ``active=False`` (the pacer stops pacing them: their leases lapse)."""
    return [_campaign(r) for r in await conn.fetch(_CAMPAIGNS)]


async def load_spend(conn: asyncpg.Connection, days: Mapping[int, date]) -> dict[int, Spend]:
    """Committed spend of each campaign on its local day, and on its earlier days."""
    if not days:
        return {}
    ids = list(days)
    rows = await conn.fetch(_SPEND, ids, [days[i] for i in ids])
    return {int(r["id"]): Spend(int(r["today"]), int(r["before"])) for r in rows}


async def add_opportunities(
    conn: asyncpg.Connection, counts: Mapping[tuple[int, int], int]
) -> None:
    """Add counts per (campaign, hour of week); older counts decay (two-week half-life)."""
    if not counts:
        return
    keys = list(counts)
    await conn.execute(
        _ADD_OPPORTUNITIES,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [float(counts[k]) for k in keys],
    )


async def load_opportunities(conn: asyncpg.Connection) -> dict[int, list[int]]:
    """Decayed opportunity counts per campaign and hour of week (168 each)."""
    out: dict[int, list[int]] = {}
    for r in await conn.fetch(_PROFILES, OPPORTUNITY_HALF_LIFE_S):
        counts = out.setdefault(int(r["campaign_id"]), [0] * HOURS_PER_WEEK)
        n = float(r["n"])
        counts[int(r["hour_of_week"])] = int(n) if math.isfinite(n) else 0
    return out


async def lease_horizon(conn: asyncpg.Connection, key: int) -> float | None:
    """Until when (real Unix seconds) a lease granted under lock ``key`` may be live; None when
    none was ever granted."""
    value = await conn.fetchval("SELECT horizon FROM pacer_lease_horizon WHERE lock_key = $1", key)
    return None if value is None else float(value)


async def raise_lease_horizon(conn: asyncpg.Connection, key: int, horizon: float) -> None:
    """Record that leases may be live until ``horizon``, before they are published (never
    lowered)."""
    await conn.execute(
        """INSERT INTO pacer_lease_horizon (lock_key, horizon) VALUES ($1, $2)
           ON CONFLICT (lock_key) DO UPDATE
           SET horizon = greatest(pacer_lease_horizon.horizon, EXCLUDED.horizon),
               updated_at = now()""",
        key,
        horizon,
    )
