"""How the run's spend followed each campaign's plan: the demo report's pacing lines.

From the exchange's own books (the auction table: billed wins, their clearing prices and
simulated times) and the portfolio's daily budgets, per campaign and for the whole portfolio:

- overdelivery: spend beyond the budget of the days the run touched, as a share of the budget;
- utilisation: spend against the plan through the end of the run (an even plan: the daily
  budget spread over the day; the pacer's plan is even until it has learnt a traffic profile,
  which a fresh demo has not);
- hourly error: per full simulated hour, spend against that hour's plan: the share of hours
  within ±20 % and the mean absolute percentage error.

"As fast as possible" campaigns have no hourly plan to follow: their hourly error is None.
The portfolio's figures add the campaigns up in USD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from sim import vocabulary as vocab
from sim.ledger import WON

SECONDS_PER_HOUR: Final = 3600
HOURS_PER_DAY: Final = 24
WITHIN: Final = 0.20


def _to_currency(usd_micros: np.ndarray[Any, Any], currency: str) -> np.ndarray[Any, Any]:
    fx = vocab.FX_PER_USD_MICROS.get(currency, 1_000_000)
    return usd_micros * fx // 1_000_000


def _usd(micros: int, currency: str) -> int:
    return micros * 1_000_000 // vocab.FX_PER_USD_MICROS.get(currency, 1_000_000)


def _hourly(spend: np.ndarray[Any, Any], plan: float) -> tuple[float | None, float | None]:
    if plan <= 0 or len(spend) == 0:
        return None, None
    errors = np.abs(spend - plan) / plan
    return float((errors <= WITHIN).mean()), float(errors.mean())


def figures(
    table: Mapping[str, np.ndarray[Any, Any]] | Any,
    plans: Sequence[Any],
    sim_seconds: float,
) -> dict[str, Any]:
    """``plans``: objects with id, name, daily_budget_micros, currency (and optionally
    pacing_mode). Money is integer micros in each campaign's currency (USD for the total)."""
    if sim_seconds <= 0:
        return {"campaigns": [], "portfolio": None}
    hours = int(sim_seconds // SECONDS_PER_HOUR)  # full simulated hours
    days = sim_seconds / (HOURS_PER_DAY * SECONDS_PER_HOUR)
    billed = (table["outcome"] == WON) & (table["billed"] == 1)
    cid = table["campaign_id"][billed]
    cost_usd = table["clear_usd_micros"][billed] // 1000
    hour = (table["t_sim"][billed] // SECONDS_PER_HOUR).astype(np.int64)
    rows = []
    tot_spend = tot_plan = tot_over = tot_budget = 0
    tot_hourly = np.zeros(max(hours, 0), dtype=np.int64)
    tot_hourly_plan = 0.0
    for p in plans:
        budget = int(p.daily_budget_micros)
        if budget <= 0:
            continue
        mine = cid == p.id
        spend_h = np.bincount(hour[mine], weights=cost_usd[mine], minlength=hours + 1)
        spend_h_usd = spend_h.astype(np.int64)
        spend = int(_to_currency(np.array([int(cost_usd[mine].sum())]), p.currency)[0])
        planned = round(budget * min(days, 1.0)) if days < 1 else round(budget * days)
        over = max(0, spend - round(budget * max(1.0, float(np.ceil(days)))))
        asap = getattr(p, "pacing_mode", "even") == "asap"
        within = mape = None
        if hours and not asap:
            full = _to_currency(spend_h_usd[:hours], p.currency)
            within, mape = _hourly(full.astype(np.float64), budget / HOURS_PER_DAY)
            tot_hourly += spend_h_usd[:hours]
            tot_hourly_plan += _usd(budget, p.currency) / HOURS_PER_DAY
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "currency": p.currency,
                "spend_micros": spend,
                "planned_micros": planned,
                "overdelivery_share": over / budget,
                "utilisation": spend / planned if planned else None,
                "hours_within_20pct": within,
                "hourly_mape": mape,
            }
        )
        tot_spend += _usd(spend, p.currency)
        tot_plan += _usd(planned, p.currency)
        tot_over += _usd(over, p.currency)
        tot_budget += _usd(budget, p.currency)
    within, mape = (
        _hourly(tot_hourly.astype(np.float64), tot_hourly_plan) if hours else (None, None)
    )
    portfolio = {
        "spend_usd_micros": tot_spend,
        "planned_usd_micros": tot_plan,
        "overdelivery_share": tot_over / tot_budget if tot_budget else None,
        "utilisation": tot_spend / tot_plan if tot_plan else None,
        "hours_within_20pct": within,
        "hourly_mape": mape,
        "overdelivery_median": float(np.median([r["overdelivery_share"] for r in rows]))
        if rows
        else None,
        "overdelivery_max": max((r["overdelivery_share"] for r in rows), default=None),
    }
    return {"campaigns": rows, "portfolio": portfolio}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def lines(pacing: Mapping[str, Any] | None) -> list[str]:
    """The report's pacing lines (none when there is nothing to say)."""
    if not pacing or not pacing.get("campaigns"):
        return []
    out = ["Pacing    per campaign: overdelivery, utilisation of plan, hours within ±20 %, MAPE"]
    for r in pacing["campaigns"]:
        out.append(
            f"          {r['id']:>4} {r['name'][:24]:<24} over {_pct(r['overdelivery_share'])}, "
            f"util {_pct(r['utilisation'])}, hours {_pct(r['hours_within_20pct'])}, "
            f"MAPE {_pct(r['hourly_mape'])}"
        )
    p = pacing["portfolio"]
    out.append(
        f"          portfolio: over {_pct(p['overdelivery_share'])} (median "
        f"{_pct(p['overdelivery_median'])}, max {_pct(p['overdelivery_max'])}), util "
        f"{_pct(p['utilisation'])}, hours {_pct(p['hours_within_20pct'])}, "
        f"MAPE {_pct(p['hourly_mape'])}"
    )
    return out
