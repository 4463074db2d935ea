"""Reading and writing the config tables as fleet.config objects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from fleet.config import (
    Advertiser,
    Campaign,
    ConfigSnapshot,
    Creative,
    FrequencyCap,
    Targeting,
)

_TARGETING_COLUMNS = (
    "countries",
    "os",
    "device_types",
    "apps_allowed",
    "apps_blocked",
    "sites_allowed",
    "sites_blocked",
    "categories",
    "sizes",
    "hours_of_week",
    "segments",
    "deal_ids",
)


def _targeting(row: asyncpg.Record | None) -> Targeting:
    if row is None:
        return Targeting()
    values: dict[str, Any] = {col: tuple(row[col]) for col in _TARGETING_COLUMNS}
    return Targeting(**values, version=int(row["version"]))


def _creative(row: asyncpg.Record) -> Creative:
    return Creative(
        id=row["id"],
        campaign_id=row["campaign_id"],
        format=row["format"],
        w=row["w"],
        h=row["h"],
        markup=row["markup"],
        adomain=tuple(row["adomain"]),
        categories=tuple(row["categories"]),
        attributes=tuple(row["attributes"]),
        mimes=tuple(row["mimes"]),
        duration=row["duration"],
        status=row["status"],
        version=row["version"],
        click_url=row["click_url"],
        paused_by=row["paused_by"],
        pause_reason=row["pause_reason"],
    )


async def load_snapshot(conn: asyncpg.Connection) -> ConfigSnapshot:
    """Everything the bid path needs, read in one repeatable-read transaction."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        adv_rows = await conn.fetch("SELECT * FROM advertisers ORDER BY id")
        camp_rows = await conn.fetch("SELECT * FROM campaigns ORDER BY id")
        cre_rows = await conn.fetch("SELECT * FROM creatives ORDER BY id")
        tgt_rows = await conn.fetch("SELECT * FROM targeting")
        cap_rows = await conn.fetch("SELECT * FROM frequency_caps ORDER BY id")
        fx_rows = await conn.fetch("SELECT currency, per_usd_micros, version FROM fx_rates")
    creatives: dict[int, list[Creative]] = defaultdict(list)
    for r in cre_rows:
        creatives[r["campaign_id"]].append(_creative(r))
    caps: dict[int, list[FrequencyCap]] = defaultdict(list)
    for r in cap_rows:
        caps[r["campaign_id"]].append(
            FrequencyCap(max_impressions=r["max_impressions"], period_seconds=r["period_seconds"])
        )
    targeting = {r["campaign_id"]: r for r in tgt_rows}
    campaigns = tuple(
        Campaign(
            id=r["id"],
            advertiser_id=r["advertiser_id"],
            name=r["name"],
            goal_type=r["goal_type"],
            goal_price_micros=r["goal_price_micros"],
            max_bid_cpm_micros=r["max_bid_cpm_micros"],
            daily_budget_micros=r["daily_budget_micros"],
            total_budget_micros=r["total_budget_micros"],
            currency=r["currency"],
            flight_start=r["flight_start"],
            flight_end=r["flight_end"],
            timezone=r["timezone"],
            pacing_mode=r["pacing_mode"],
            status=r["status"],
            targeting=_targeting(targeting.get(r["id"])),
            frequency_caps=tuple(caps[r["id"]]),
            creatives=tuple(creatives[r["id"]]),
            version=r["version"],
            attribution_window_seconds=r["attribution_window_seconds"],
            goal_event=r["goal_event"],
            paused_by=r["paused_by"],
            pause_reason=r["pause_reason"],
        )
        for r in camp_rows
    )
    advertisers = tuple(
        Advertiser(
            id=r["id"], name=r["name"], domain=r["domain"], status=r["status"], version=r["version"]
        )
        for r in adv_rows
    )
    versions = [0]
    versions += [a.version for a in advertisers] + [c.version for c in campaigns]
    versions += [int(r["version"]) for r in (*cre_rows, *tgt_rows, *cap_rows, *fx_rows)]
    return ConfigSnapshot(
        advertisers=advertisers,
        campaigns=campaigns,
        version=max(versions),
        fx_per_usd_micros={r["currency"]: int(r["per_usd_micros"]) for r in fx_rows},
    )


async def upsert(
    conn: asyncpg.Connection,
    advertisers: Sequence[Advertiser],
    campaigns: Sequence[Campaign],
) -> None:
    """Insert or update everything given, in one transaction. Creatives and frequency caps of a
    given campaign are replaced by the ones given (those not named are archived / removed).

    A campaign or creative that a rule paused (``paused_by`` set) stays paused when the document
    says ``active``: only the campaign manager's own ``paused`` or ``archived`` replaces that
    status (and clears ``paused_by``). ``rtbfleet campaigns list`` shows who paused what."""
    async with conn.transaction():
        for a in advertisers:
            await conn.execute(
                """INSERT INTO advertisers (id, name, domain, status) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
                       domain = EXCLUDED.domain, status = EXCLUDED.status""",
                a.id,
                a.name,
                a.domain,
                a.status,
            )
        for c in campaigns:
            await conn.execute(
                """INSERT INTO campaigns (id, advertiser_id, name, goal_type, goal_price_micros,
                       max_bid_cpm_micros, daily_budget_micros, total_budget_micros, currency,
                       flight_start, flight_end, timezone, pacing_mode, status,
                       attribution_window_seconds, goal_event)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                   ON CONFLICT (id) DO UPDATE SET advertiser_id = EXCLUDED.advertiser_id,
                       name = EXCLUDED.name, goal_type = EXCLUDED.goal_type,
                       goal_price_micros = EXCLUDED.goal_price_micros,
                       max_bid_cpm_micros = EXCLUDED.max_bid_cpm_micros,
                       daily_budget_micros = EXCLUDED.daily_budget_micros,
                       total_budget_micros = EXCLUDED.total_budget_micros,
                       currency = EXCLUDED.currency, flight_start = EXCLUDED.flight_start,
                       flight_end = EXCLUDED.flight_end, timezone = EXCLUDED.timezone,
                       pacing_mode = EXCLUDED.pacing_mode,
                       attribution_window_seconds = EXCLUDED.attribution_window_seconds,
                       goal_event = EXCLUDED.goal_event,
                       status = CASE WHEN campaigns.paused_by <> ''
                                     AND EXCLUDED.status = 'active'
                                THEN campaigns.status ELSE EXCLUDED.status END,
                       paused_by = CASE WHEN EXCLUDED.status = 'active'
                                   THEN campaigns.paused_by ELSE '' END,
                       pause_reason = CASE WHEN EXCLUDED.status = 'active'
                                      THEN campaigns.pause_reason ELSE '' END""",
                c.id,
                c.advertiser_id,
                c.name,
                c.goal_type,
                c.goal_price_micros,
                c.max_bid_cpm_micros,
                c.daily_budget_micros,
                c.total_budget_micros,
                c.currency,
                c.flight_start,
                c.flight_end,
                c.timezone,
                c.pacing_mode,
                c.status,
                c.attribution_window_seconds,
                c.goal_event,
            )
            t = c.targeting
            columns = ", ".join(_TARGETING_COLUMNS)
            params = ", ".join(f"${i + 2}" for i in range(len(_TARGETING_COLUMNS)))
            updates = ", ".join(f"{col} = EXCLUDED.{col}" for col in _TARGETING_COLUMNS)
            await conn.execute(
                f"INSERT INTO targeting (campaign_id, {columns}) VALUES ($1, {params}) "
                f"ON CONFLICT (campaign_id) DO UPDATE SET {updates}",
                c.id,
                *(list(getattr(t, col)) for col in _TARGETING_COLUMNS),
            )
            for cr in c.creatives:
                await conn.execute(
                    """INSERT INTO creatives (id, campaign_id, format, w, h, markup, adomain,
                           categories, attributes, mimes, duration, status, click_url)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                       ON CONFLICT (id) DO UPDATE SET campaign_id = EXCLUDED.campaign_id,
                           format = EXCLUDED.format, w = EXCLUDED.w, h = EXCLUDED.h,
                           markup = EXCLUDED.markup, adomain = EXCLUDED.adomain,
                           categories = EXCLUDED.categories, attributes = EXCLUDED.attributes,
                           mimes = EXCLUDED.mimes, duration = EXCLUDED.duration,
                           click_url = EXCLUDED.click_url,
                           status = CASE WHEN creatives.paused_by <> ''
                                         AND EXCLUDED.status = 'active'
                                    THEN creatives.status ELSE EXCLUDED.status END,
                           paused_by = CASE WHEN EXCLUDED.status = 'active'
                                       THEN creatives.paused_by ELSE '' END,
                           pause_reason = CASE WHEN EXCLUDED.status = 'active'
                                          THEN creatives.pause_reason ELSE '' END""",
                    cr.id,
                    c.id,
                    cr.format,
                    cr.w,
                    cr.h,
                    cr.markup,
                    list(cr.adomain),
                    list(cr.categories),
                    list(cr.attributes),
                    list(cr.mimes),
                    cr.duration,
                    cr.status,
                    cr.click_url,
                )
            await conn.execute(
                "UPDATE creatives SET status = 'archived' "
                "WHERE campaign_id = $1 AND NOT (id = ANY($2::bigint[])) AND status <> 'archived'",
                c.id,
                [cr.id for cr in c.creatives],
            )
            await conn.execute(
                "DELETE FROM frequency_caps WHERE campaign_id = $1 "
                "AND NOT (period_seconds = ANY($2::integer[]))",
                c.id,
                [cap.period_seconds for cap in c.frequency_caps],
            )
            for cap in c.frequency_caps:
                await conn.execute(
                    """INSERT INTO frequency_caps (campaign_id, max_impressions, period_seconds)
                       VALUES ($1, $2, $3) ON CONFLICT (campaign_id, period_seconds)
                       DO UPDATE SET max_impressions = EXCLUDED.max_impressions""",
                    c.id,
                    cap.max_impressions,
                    cap.period_seconds,
                )
