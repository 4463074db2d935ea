"""The tracker's own books of a run beside the simulator's: the report's Tracked, Attribution
and Cost per activation lines.

After a run the report reads from Postgres what the tracker recorded:

- **Tracked**: ``campaign_spend``, the spend the tracker alone writes (integer micros in the
  campaign currency), less what it held as the traffic began (a kept data directory holds
  earlier runs). Each campaign's must equal, to the micro, what the exchange billed it (the
  simulator's clearing prices, duplicate billing notices included: the exchange sent some
  twice, and each counts once).
- **Attribution**: the installs the tracker attributed to a click of this run (the click's
  transaction id carries the run's tag), per campaign, against the installs the simulator's
  users made after our clicks.
- **Cost per activation**: per campaign, the tracker's spend over its attributed activations
  (installs, or the campaign's goal event): the table a campaign manager watches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sim.report import CampaignPlan

FIGURE = "tracker"

_SPEND = "SELECT campaign_id, sum(spent_micros)::bigint AS spent FROM campaign_spend GROUP BY 1"
_INSTALLS = """
SELECT campaign_id, count(*) AS n FROM tracker_installs
WHERE attributed AND txid LIKE $1 GROUP BY 1
"""
_EVENTS = """
SELECT campaign_id, name, count(*) AS n FROM tracker_events
WHERE attributed AND txid LIKE $1 GROUP BY 1, 2
"""
_ORGANIC = "SELECT count(*) FROM tracker_installs WHERE NOT attributed AND app LIKE $1"


@dataclass(frozen=True)
class Spend:
    by_campaign: Mapping[int, int]  # campaign id -> micros, campaign currency

    def minus(self, earlier: Spend) -> dict[int, int]:
        return {
            cid: spent - earlier.by_campaign.get(cid, 0)
            for cid, spent in self.by_campaign.items()
            if spent != earlier.by_campaign.get(cid, 0)
        }


async def _spend(conn: asyncpg.Connection) -> Spend:
    return Spend({int(r["campaign_id"]): int(r["spent"]) for r in await conn.fetch(_SPEND)})


async def baseline(dsn: str) -> Spend | None:
    """The tracker's spend before the run (None when Postgres cannot be read)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        return await _spend(conn)
    except (OSError, asyncpg.PostgresError):
        return None
    finally:
        await conn.close()


@dataclass
class Books:
    spend: dict[int, int] = field(default_factory=dict)
    installs: dict[int, int] = field(default_factory=dict)
    events: dict[int, dict[str, int]] = field(default_factory=dict)
    organic_installs: int = 0


async def read_books(dsn: str, before: Spend, run_tag: str) -> Books:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        books = Books(spend=(await _spend(conn)).minus(before))
        pattern = f"{run_tag}-%" if run_tag else "%"
        for r in await conn.fetch(_INSTALLS, pattern):
            books.installs[int(r["campaign_id"])] = int(r["n"])
        for r in await conn.fetch(_EVENTS, pattern):
            books.events.setdefault(int(r["campaign_id"]), {})[str(r["name"])] = int(r["n"])
        books.organic_installs = int(
            await conn.fetchval(_ORGANIC, f"%#{run_tag}" if run_tag else "%") or 0
        )
        return books
    finally:
        await conn.close()


def compare(
    campaigns: list[dict[str, Any]], plans: Iterable[CampaignPlan], books: Books
) -> tuple[dict[str, Any], list[str]]:
    """The figures of the three lines, and the problems of the first two."""
    by_id = {p.id: p for p in plans}
    problems: list[str] = []
    spend_rows, wrong_spend, install_rows, wrong_installs, cpa = [], [], [], [], []
    for c in campaigns:
        cid = c["id"]
        billed = int(c.get("spend_micros", c["spend_usd_micros"]))  # campaign currency
        tracked = books.spend.get(cid, 0)
        spend_rows.append({"id": cid, "exchange_micros": billed, "tracker_micros": tracked})
        if billed != tracked:
            wrong_spend.append(f"campaign {cid}: exchange billed {billed}, tracker {tracked}")
        sim_installs, attributed = int(c["installs"]), books.installs.get(cid, 0)
        install_rows.append({"id": cid, "simulator": sim_installs, "attributed": attributed})
        if sim_installs != attributed:
            wrong_installs.append(
                f"campaign {cid}: {sim_installs} installs after our clicks, {attributed} attributed"
            )
        plan = by_id.get(cid)
        if plan is None or not (tracked or attributed):
            continue
        goal_event = plan.goal_event
        activations = books.events.get(cid, {}).get(goal_event, 0) if goal_event else attributed
        cpa.append(
            {
                "id": cid,
                "name": plan.name,
                "goal_type": plan.goal_type,
                "activation": goal_event or "install",
                "currency": plan.currency,
                "spend_micros": tracked,
                "activations": activations,
                "cpa_micros": tracked // activations if activations else None,
                "target_micros": plan.goal_price_micros
                if plan.goal_type in ("CPI", "CPA")
                else None,
            }
        )
    total_billed = sum(r["exchange_micros"] for r in spend_rows)
    total_tracked = sum(books.spend.values())
    if wrong_spend or total_tracked != total_billed:
        problems.append(
            f"tracked spend differs from the exchange's billing in {len(wrong_spend)} "
            f"campaign(s): {'; '.join(wrong_spend[:3]) or 'campaigns outside the report'} "
            f"(total: exchange {total_billed}, tracker {total_tracked} micros)"
        )
    if wrong_installs:
        problems.append(
            f"attributed installs differ from the simulator's in {len(wrong_installs)} "
            f"campaign(s): {'; '.join(wrong_installs[:3])} "
            f"({books.organic_installs} of this run's installs taken as organic)"
        )
    figures = {
        "spend": {"campaigns": spend_rows, "exchange_micros": total_billed,
                  "tracker_micros": total_tracked, "equal": not wrong_spend
                  and total_tracked == total_billed},
        "attribution": {"campaigns": install_rows,
                        "simulator": sum(r["simulator"] for r in install_rows),
                        "attributed": sum(r["attributed"] for r in install_rows),
                        "organic": books.organic_installs, "equal": not wrong_installs},
        "cost_per_activation": cpa,
    }  # fmt: skip
    return figures, problems


async def attach(
    figures: dict[str, Any],
    dsn: str,
    before: Spend | None,
    run_tag: str,
    plans: Iterable[CampaignPlan],
) -> list[str]:
    """Adds the comparison to ``figures`` (``tracker``) and returns its problems."""
    if before is None:
        problems = ["the tracker's spend was unreadable before the run"]
        figures[FIGURE] = {"problems": problems}
        return problems
    try:
        books = await read_books(dsn, before, run_tag)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        problems = [f"the tracker's books are unreadable: {exc}"]
        figures[FIGURE] = {"problems": problems}
        return problems
    found, problems = compare(list(figures["campaigns"]), plans, books)
    figures[FIGURE] = {**found, "problems": problems}
    return problems
