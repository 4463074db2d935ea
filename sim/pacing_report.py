"""How the run's spend followed each campaign's plan: the demo report's pacing lines.

From the exchange's own books (the auction table: billed wins, their clearing prices and
simulated times) and the portfolio, per campaign and for the whole portfolio:

- the plan: what the pacer plans over the simulated span the run covered
  (``pacing.gate.make_plan`` on each local day the span touches, in the campaign's timezone,
  within its flight and dayparting; even plans uniform over the day's hours, as the pacer's
  are until it has learnt a traffic profile, which a fresh demo has not). A run of 6.4
  simulated hours plans 6.4 hours' worth of each daily budget, not the day's; an "as fast as
  possible" plan is due its day's budget at once;
- overdelivery: spend beyond the budget of each local day the run touched, as a share of the
  daily budget;
- utilisation: spend against the plan through the end of the run;
- hourly error: per full simulated hour with planned spend, spend against that hour's plan:
  the share of hours within ±20 % and the mean absolute percentage error.

"As fast as possible" campaigns have no hourly plan to follow: their hourly error is None.
The portfolio's figures add the campaigns up in USD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import numpy as np

from fleet.plan import DayPlan, Profile, local_day, make_plan, zone
from sim import vocabulary as vocab
from sim.ledger import WON

SECONDS_PER_HOUR: Final = 3600
HOURS_PER_DAY: Final = 24
WITHIN: Final = 0.20


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


def _due(plan: DayPlan, at: float) -> int:
    """What the plan has made due before ``at`` (an asap hour is due at its start)."""
    if at <= plan.start:
        return 0
    return plan.target(at - 1e-6) if plan.asap else plan.target(at)


def planned_between(
    budget: int,
    t0: float,
    t1: float,
    *,
    timezone: str = "UTC",
    mode: str = "even",
    flight_start: Any = None,
    flight_end: Any = None,
    hours_of_week: Sequence[int] = (),
) -> int:
    """What the pacer plans a campaign with a daily ``budget`` to spend between ``t0`` and
    ``t1`` (epoch seconds): the sum over the local days touched. Flights are epoch seconds,
    datetimes or ISO text; ``hours_of_week`` the campaign's dayparting."""
    if t1 <= t0 or budget <= 0:
        return 0
    tz = zone(timezone or "UTC")
    start, end = _epoch(flight_start), _epoch(flight_end)
    total = 0
    day = local_day(tz, t0)
    while True:
        plan = make_plan(
            0,
            tz,
            day,
            budget,
            mode or "even",
            Profile.uniform(),
            flight_start=start,
            flight_end=end,
            hours_of_week=hours_of_week,
        )
        total += _due(plan, min(t1, plan.end)) - _due(plan, max(t0, plan.start))
        if plan.end >= t1:
            return total
        day = local_day(tz, plan.end)


def planned_for(p: Any, budget: int, t0: float, t1: float) -> int:
    """``planned_between`` for a ``sim.report.CampaignPlan`` (or anything with its fields)."""
    return planned_between(
        budget,
        t0,
        t1,
        timezone=getattr(p, "timezone", "UTC"),
        mode=getattr(p, "pacing_mode", "even"),
        flight_start=getattr(p, "flight_start", None),
        flight_end=getattr(p, "flight_end", None),
        hours_of_week=getattr(p, "hours_of_week", ()),
    )


def _to_currency(usd_micros: np.ndarray[Any, Any], currency: str) -> np.ndarray[Any, Any]:
    fx = vocab.FX_PER_USD_MICROS.get(currency, 1_000_000)
    return usd_micros * fx // 1_000_000


def _usd(micros: int, currency: str) -> int:
    return micros * 1_000_000 // vocab.FX_PER_USD_MICROS.get(currency, 1_000_000)


def _hourly(spend: np.ndarray[Any, Any], plan: np.ndarray[Any, Any]) -> tuple[Any, Any]:
    due = plan > 0
    if not due.any():
        return None, None
    errors = np.abs(spend[due] - plan[due]) / plan[due]
    return float((errors <= WITHIN).mean()), float(errors.mean())


def _overdelivery(p: Any, budget: int, at: np.ndarray[Any, Any], cost: np.ndarray[Any, Any]) -> int:
    """Spend beyond the budget of each local day, added up (campaign currency)."""
    if len(at) == 0:
        return 0
    tz = zone(getattr(p, "timezone", "UTC") or "UTC")
    days = np.array([local_day(tz, float(t)).toordinal() for t in at])
    over = 0
    for d in np.unique(days):
        over += max(0, int(cost[days == d].sum()) - budget)
    return over


def figures(
    table: Mapping[str, np.ndarray[Any, Any]] | Any,
    plans: Sequence[Any],
    sim_seconds: float,
    sim_start: float = 0.0,
) -> dict[str, Any]:
    """``plans``: objects with id, name, daily_budget_micros, currency (and optionally
    pacing_mode, timezone, flight_start, flight_end); ``sim_start``: the epoch second the
    simulated span begins at (its hours are the report's hours). Money is integer micros in
    each campaign's currency (USD for the totals)."""
    if sim_seconds <= 0:
        return {"campaigns": [], "portfolio": None}
    hours = int(sim_seconds // SECONDS_PER_HOUR)  # full simulated hours
    span_hours = -(-int(sim_seconds) // SECONDS_PER_HOUR)
    end = sim_start + sim_seconds
    billed = (table["outcome"] == WON) & (table["billed"] == 1)
    cid = table["campaign_id"][billed]
    cost_usd = table["clear_usd_micros"][billed] // 1000
    t_sim = table["t_sim"][billed]
    hour = (t_sim // SECONDS_PER_HOUR).astype(np.int64)
    rows = []
    tot_spend = tot_plan = tot_over = tot_budget = 0
    tot_hourly = np.zeros(hours, dtype=np.int64)
    tot_hourly_plan = np.zeros(hours, dtype=np.int64)
    for p in plans:
        budget = int(p.daily_budget_micros)
        if budget <= 0:
            continue
        mine = cid == p.id
        spend_h_usd = np.bincount(hour[mine], weights=cost_usd[mine], minlength=span_hours)
        spend_h_usd = spend_h_usd.astype(np.int64)
        cost = _to_currency(cost_usd[mine], p.currency)
        spend = int(cost.sum())
        plan_h = np.array(
            [
                planned_for(
                    p,
                    budget,
                    sim_start + h * SECONDS_PER_HOUR,
                    min(end, sim_start + (h + 1) * SECONDS_PER_HOUR),
                )
                for h in range(span_hours)
            ],
            dtype=np.int64,
        )
        planned = int(plan_h.sum())
        over = _overdelivery(p, budget, sim_start + t_sim[mine], cost)
        asap = getattr(p, "pacing_mode", "even") == "asap"
        within = mape = None
        if hours and not asap:
            full = _to_currency(spend_h_usd[:hours], p.currency)
            within, mape = _hourly(full.astype(np.float64), plan_h[:hours].astype(np.float64))
            tot_hourly += spend_h_usd[:hours]
            tot_hourly_plan += np.array([_usd(int(v), p.currency) for v in plan_h[:hours]])
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "currency": p.currency,
                "mode": "asap" if asap else "even",
                "daily_budget_micros": budget,
                "spend_micros": spend,
                "planned_micros": planned,
                "plan_hourly_micros": plan_h.tolist(),
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
        _hourly(tot_hourly.astype(np.float64), tot_hourly_plan.astype(np.float64))
        if hours
        else (None, None)
    )
    utils = [r["utilisation"] for r in rows if r["utilisation"] is not None]
    portfolio = {
        "spend_usd_micros": tot_spend,
        "planned_usd_micros": tot_plan,
        "overdelivery_share": tot_over / tot_budget if tot_budget else None,
        "utilisation": tot_spend / tot_plan if tot_plan else None,
        "utilisation_median": float(np.median(utils)) if utils else None,
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
        f"{_pct(p['utilisation'])} (median {_pct(p.get('utilisation_median'))}), hours "
        f"{_pct(p['hours_within_20pct'])}, MAPE {_pct(p['hourly_mape'])}"
    )
    return out
