"""The figures of a run, and the check that they add up.

``build(ledger, ...)`` turns the exchange's books into a ``Report``: plain JSON-able figures plus
the auction rows they came from (``table``). ``check(report)`` recomputes what it can from the
rows and lists every disagreement, so a report that says one thing while its rows say another
cannot pass. A figure whose service is not running yet (the tracker's own records, a learnt
model) is the string ``NOT_MEASURED`` followed by the reason.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from fleet.config import Campaign
from sim import calibration, frequency_check, learning, pacing_report
from sim import vocabulary as vocab
from sim.ledger import (
    LATE,
    OUTCOME_NAMES,
    WON,
    AuctionTable,
    Ledger,
)
from sim.market import Market

NOT_MEASURED = "not measured yet"
SECONDS_PER_DAY = 86_400


@dataclasses.dataclass(frozen=True)
class CampaignPlan:
    """What a campaign was meant to do, from the portfolio."""

    id: int
    name: str
    goal_type: str
    goal_price_micros: int
    daily_budget_micros: int
    currency: str = "USD"
    pacing_mode: str = "even"
    # what the pacer's plan depends on besides the budget (sim.pacing_report)
    timezone: str = "UTC"
    flight_start: float | None = None  # epoch seconds
    flight_end: float | None = None
    hours_of_week: tuple[int, ...] = ()
    frequency_caps: tuple[tuple[int, int], ...] = ()  # (impressions at most, period seconds)
    goal_event: str = ""  # the in-app event that counts as an activation ("": installs)

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignPlan:
        return cls(
            frequency_caps=tuple(
                (cap.max_impressions, cap.period_seconds) for cap in campaign.frequency_caps
            ),
            id=campaign.id,
            name=campaign.name,
            goal_type=campaign.goal_type,
            goal_price_micros=campaign.goal_price_micros,
            daily_budget_micros=campaign.daily_budget_micros,
            currency=campaign.currency,
            pacing_mode=campaign.pacing_mode,
            timezone=campaign.timezone,
            flight_start=campaign.flight_start.timestamp() if campaign.flight_start else None,
            flight_end=campaign.flight_end.timestamp() if campaign.flight_end else None,
            hours_of_week=tuple(campaign.targeting.hours_of_week),
            goal_event=campaign.goal_event,
        )


@dataclasses.dataclass
class FleetRecords:
    """What the fleet itself recorded on the event bus during the run."""

    connected: bool = False
    why: str = ""
    predictions: list[calibration.Prediction] = dataclasses.field(default_factory=list)
    events: Counter[str] = dataclasses.field(default_factory=Counter)
    billed_cost_micros: Counter[int] = dataclasses.field(default_factory=Counter)  # by campaign
    gaps: int = 0


@dataclasses.dataclass
class Report:
    meta: dict[str, Any]
    figures: dict[str, Any]
    table: AuctionTable
    request_index: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, **self.figures}


def _percentiles(values: Iterable[float]) -> dict[str, float]:
    arr = np.fromiter(values, dtype=np.float64)
    if not len(arr):
        return {"count": 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "count": len(arr),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def to_campaign_currency(usd_micros: int, currency: str) -> int:
    fx = vocab.FX_PER_USD_MICROS.get(currency, 1_000_000)
    return usd_micros * fx // 1_000_000


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def build(
    ledger: Ledger,
    *,
    plans: Iterable[CampaignPlan] = (),
    records: FleetRecords | None = None,
    meta: Mapping[str, Any] | None = None,
    buckets: int = 24,
    market: Market | None = None,
) -> Report:
    """The report of a finished run. ``meta`` must say ``sim_seconds`` (simulated span);
    ``market``: the run's, for the learning figures' oracle bounds."""
    table = ledger.table()
    meta = dict(meta or {})
    outcome = table["outcome"]
    outcomes = {name: int((outcome == i).sum()) for i, name in enumerate(OUTCOME_NAMES)}
    has_bid = table["bid_usd_micros"] > 0
    answered_rows = table["latency_ms"] >= 0
    statuses = {str(k): v for k, v in sorted(ledger.request_statuses.items())}
    errors = dict(sorted(ledger.request_errors.items()))
    not_sent = sum(v for k, v in errors.items() if k in _NOT_SENT)
    figures: dict[str, Any] = {
        "requests": {
            "offered": ledger.requests,
            "sent": ledger.sent,
            "answered": ledger.answered,
            "not_sent": not_sent,
            "timeouts": errors.get("timeout", 0),
            "transport_errors": ledger.requests
            - ledger.answered
            - not_sent
            - errors.get("timeout", 0),
            "late": len(ledger.late_ms),
            "late_in_client_stalls": ledger.late_in_stalls,
            "timeouts_in_client_stalls": ledger.timeouts_in_stalls,
            "client_stall_seconds": round(ledger.stall_seconds, 3),
            "statuses": statuses,
            "errors": errors,
            "gzip": ledger.gzip_sent,
            "versions": dict(ledger.versions),
        },
        "impressions": {
            "offered": len(table),
            "outcomes": outcomes,
            "bids": ledger.bids,
            "wins": ledger.wins,
            "billed": ledger.billed,
            "answered": int(answered_rows.sum()),
            "bid_rate": _ratio(ledger.bids, int(answered_rows.sum())),  # of impressions answered
            "win_rate": _ratio(ledger.wins, ledger.bids),
            "loss_reasons": {
                str(k): int(v)
                for k, v in sorted(Counter(table["loss_reason"][has_bid].tolist()).items())
            },
        },
        "latency_ms": _percentiles(ledger.latencies_ms),
        "late_by_ms": _percentiles(ledger.late_ms),
        "schedule_lag_ms": _percentiles(ledger.lag_ms),
        "policy": {
            "bids_on_crawlers": int((has_bid & (table["crawler"] == 1)).sum()),
            "bids_without_gdpr_consent": int((has_bid & (table["no_consent"] == 1)).sum()),
            "bids_on_coppa": int((has_bid & (table["coppa"] == 1)).sum()),
        },
        "spend_usd_micros": int(sum(ledger.spend_usd_micros.values())),
        "users": {
            "clicks": ledger.clicks,
            "installs": ledger.installs,
            "events": ledger.events,
            "revenue_micros": ledger.revenue_micros,
        },
        "notices": _notices(ledger),
    }
    sim_seconds = float(meta.get("sim_seconds") or 0.0)
    plans = list(plans)
    figures["campaigns"] = _campaigns(ledger, table, list(plans), sim_seconds)
    sim_start = meta.get("sim_start")
    start = datetime.fromisoformat(sim_start).timestamp() if isinstance(sim_start, str) else 0.0
    figures["pacing"] = pacing_report.figures(table, plans, sim_seconds, start)
    paced = {r["id"]: r for r in figures["pacing"]["campaigns"]}
    for entry in figures["campaigns"]:  # the plan is the pacer's (timezones, flights)
        row = paced.get(entry["id"])
        if row is not None:
            entry["planned_micros"] = row["planned_micros"]
            entry["spend_vs_plan"] = row["utilisation"]
            entry["overdelivery_share"] = row["overdelivery_share"]
            entry["overdelivery_micros"] = round(
                row["overdelivery_share"] * row["daily_budget_micros"]
            )
    figures["series"] = _series(table, sim_seconds, buckets)
    figures["fleet"] = _fleet(records, ledger, table)
    figures["frequency"] = frequency_check.figures(ledger.shown, plans)
    figures["learning"] = learning.figures(
        records.predictions if records is not None else (),
        ledger.request_index,
        table,
        sim_seconds,
        market,
    )
    return Report(meta, figures, table, dict(ledger.request_index))


_NOT_SENT = frozenset({"expired", "queue_full", "refused", "closed", "not_allowed", "behind"})


def _notices(ledger: Ledger) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, c in ledger.notices.items():
        out[kind] = {
            "due": c.due,
            "sent": c.sent,
            "answered": c.answered,
            "statuses": {str(k): v for k, v in sorted(c.statuses.items())},
            "unanswered": dict(sorted(c.unanswered.items())),
            "pending_at_end": c.pending_at_end,
            "duplicates": c.duplicates,
        }
    return out


def _campaigns(
    ledger: Ledger, table: AuctionTable, plans: list[CampaignPlan], sim_seconds: float
) -> list[dict[str, Any]]:
    by_id = {p.id: p for p in plans}
    cid = table["campaign_id"]
    ids = sorted(set(by_id) | {int(c) for c in np.unique(cid[cid != -1])})
    days = max(sim_seconds / SECONDS_PER_DAY, 1e-9)
    out = []
    for campaign_id in ids:
        mine = cid == campaign_id
        won = mine & (table["outcome"] == WON)
        billed_rows = won & (table["billed"] == 1)
        spend_usd = int(ledger.spend_usd_micros.get(campaign_id, 0))
        plan = by_id.get(campaign_id)
        entry: dict[str, Any] = {
            "id": campaign_id,
            "name": plan.name if plan else "",
            "bids": int((mine & (table["bid_usd_micros"] > 0)).sum()),
            "wins": int(won.sum()),
            "billed": int(billed_rows.sum()),
            "clicks": int((billed_rows & (table["clicked"] == 1)).sum()),
            "installs": int((billed_rows & (table["installed"] == 1)).sum()),
            "spend_usd_micros": spend_usd,
        }
        if plan is not None:
            spend = to_campaign_currency(spend_usd, plan.currency)
            budget = plan.daily_budget_micros
            planned = round(budget * min(days, 1.0)) if days < 1 else round(budget * days)
            over = max(0, spend - round(budget * max(1.0, np.ceil(days))))
            entry.update(
                {
                    "currency": plan.currency,
                    "goal_type": plan.goal_type,
                    "goal_price_micros": plan.goal_price_micros,
                    "daily_budget_micros": budget,
                    "spend_micros": spend,
                    "planned_micros": planned,
                    "spend_vs_plan": _ratio(spend, planned),
                    "overdelivery_micros": over,
                    "overdelivery_share": _ratio(over, budget),
                    "cost_per_click_micros": spend // entry["clicks"] if entry["clicks"] else None,
                    "cost_per_install_micros": spend // entry["installs"]
                    if entry["installs"]
                    else None,
                    "ecpm_micros": spend * 1000 // entry["billed"] if entry["billed"] else None,
                }
            )
            goal_cost = {
                "CPC": entry["cost_per_click_micros"],
                "CPI": entry["cost_per_install_micros"],
                "CPM": entry["ecpm_micros"],
            }.get(plan.goal_type)
            entry["cost_vs_goal"] = (
                _ratio(goal_cost, plan.goal_price_micros) if goal_cost is not None else None
            )
        out.append(entry)
    return out


def _series(table: AuctionTable, sim_seconds: float, buckets: int) -> dict[str, Any]:
    """Per bucket of simulated time: offered, bids, wins, spend (USD micros) by campaign."""
    span = max(sim_seconds, float(table["t_sim"].max()) if len(table) else 0.0, 1.0)
    edges = np.linspace(0.0, span, buckets + 1)
    t = table["t_sim"]
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, buckets - 1)
    has_bid = table["bid_usd_micros"] > 0
    won = table["outcome"] == WON
    billed = table["billed"] == 1
    cost = table["clear_usd_micros"] // 1000
    spend: dict[str, list[int]] = {}
    for campaign_id in np.unique(table["campaign_id"][billed]):
        mine = billed & (table["campaign_id"] == campaign_id)
        spend[str(int(campaign_id))] = (
            np.bincount(which[mine], weights=cost[mine], minlength=buckets)
            .astype(np.int64)
            .tolist()
        )
    return {
        "edges_sim_s": edges.tolist(),
        "offered": np.bincount(which, minlength=buckets).tolist(),
        "answered": np.bincount(which[table["latency_ms"] >= 0], minlength=buckets).tolist(),
        "bids": np.bincount(which[has_bid], minlength=buckets).tolist(),
        "wins": np.bincount(which[won], minlength=buckets).tolist(),
        "late": np.bincount(which[table["outcome"] == LATE], minlength=buckets).tolist(),
        "spend_usd_micros": spend,
    }


def _fleet(records: FleetRecords | None, ledger: Ledger, table: AuctionTable) -> dict[str, Any]:
    """Figures from the fleet's own records: the live model, and the tracker's spend."""
    if records is None or not records.connected:
        why = records.why if records is not None else "the event bus was not watched"
        return {"model": f"{NOT_MEASURED}: {why}", "tracked_spend": f"{NOT_MEASURED}: {why}"}
    out: dict[str, Any] = {"events": dict(records.events), "bus_gaps": records.gaps}
    if records.predictions:
        model = calibration.compare(records.predictions, ledger.request_index, table)
        out["model"] = (
            model if model["joined"] else f"{NOT_MEASURED}: no bid event matched a bid we saw"
        )
    else:
        out["model"] = f"{NOT_MEASURED}: no bid events on the bus (no bidder publishes them)"
    billing = ledger.notices["billing"]
    if records.events.get("billing"):
        tracked = int(sum(records.billed_cost_micros.values()))
        out["tracked_spend"] = {
            "billing_events": records.events["billing"],
            "cost_micros": tracked,
            "by_campaign": {str(k): v for k, v in sorted(records.billed_cost_micros.items())},
        }
    elif billing.answered:
        out["tracked_spend"] = "no billing events on the bus although billing notices were answered"
    else:
        out["tracked_spend"] = f"{NOT_MEASURED}: no tracker answered the billing notices"
    return out


def notice_problems(notices: Mapping[str, Any]) -> list[str]:
    """Every due notice answered, and answered as a success (2xx, or a click's redirect)."""
    problems = []
    for kind, c in notices.items():
        unanswered = sum(c["unanswered"].values())
        refused = {s: n for s, n in c["statuses"].items() if not 200 <= int(s) < 400}
        if unanswered:
            why = ", ".join(f"{k} {v}" for k, v in c["unanswered"].items())
            problems.append(f"notices: {kind}: {unanswered} of {c['due']} due unanswered ({why})")
        if refused:
            how = ", ".join(f"HTTP {s}: {n}" for s, n in refused.items())
            problems.append(f"notices: {kind}: {sum(refused.values())} refused ({how})")
    return problems


def check(report: Report) -> list[str]:
    """Every way the report disagrees with itself or with its rows; empty when consistent."""
    f, t = report.figures, report.table
    problems = notice_problems(f["notices"]) + frequency_check.problems(f.get("frequency", {}))
    req, imp = f["requests"], f["impressions"]
    outcome = t["outcome"]
    n = len(t)
    if (
        req["offered"]
        != req["answered"] + req["not_sent"] + req["timeouts"] + req["transport_errors"]
        or min(req["transport_errors"], req["not_sent"], req["timeouts"]) < 0
    ):
        problems.append(
            f"requests do not add up: offered {req['offered']} != answered {req['answered']}"
            f" + not sent {req['not_sent']} + timeouts {req['timeouts']}"
            f" + transport errors {req['transport_errors']}"
        )
    if sum(int(v) for v in req["statuses"].values()) != req["answered"]:
        problems.append("HTTP status counts do not add up to the answered requests")
    if imp["offered"] != n or sum(imp["outcomes"].values()) != n:
        problems.append(f"impression outcomes do not add up to the {n} rows")
    for i, name in enumerate(OUTCOME_NAMES):
        if imp["outcomes"].get(name, 0) != int((outcome == i).sum()):
            problems.append(f"outcome {name!r} count differs from the rows")
    if len(np.unique(t["req"])) != req["offered"]:
        problems.append(
            f"{req['offered']} requests offered but rows cover {len(np.unique(t['req']))}"
        )
    won = outcome == WON
    no_bid = won & ((t["bid_usd_micros"] <= 0) | (t["campaign_id"] == -1) | (t["status"] != 200))
    if no_bid.any():
        problems.append(f"{int(no_bid.sum())} wins without a bid")
    if imp["wins"] != int(won.sum()):
        problems.append(f"wins {imp['wins']} != {int(won.sum())} won rows")
    if imp["wins"] > imp["bids"]:
        problems.append(f"more wins ({imp['wins']}) than bids ({imp['bids']})")
    if (won & (t["clear_usd_micros"] > t["bid_usd_micros"])).any():
        problems.append("a win cleared above its bid")
    if (won & (t["clear_usd_micros"] < t["floor_usd_micros"])).any():
        problems.append("a win cleared below its floor")
    first_price = won & (t["auction_type"] == 1)
    if (first_price & (t["clear_usd_micros"] != t["bid_usd_micros"])).any():
        problems.append("a first-price win did not pay its bid")
    billed = t["billed"] == 1
    if (billed & ~won).any():
        problems.append(f"{int((billed & ~won).sum())} billed impressions that were not won")
    if imp["billed"] != int(billed.sum()):
        problems.append(f"billed {imp['billed']} != {int(billed.sum())} billed rows")
    cost = t["clear_usd_micros"] // 1000
    total = 0
    for c in f["campaigns"]:
        rows = billed & (t["campaign_id"] == c["id"])
        expected = int(cost[rows].sum())
        total += c["spend_usd_micros"]
        if c["spend_usd_micros"] != expected:
            problems.append(
                f"campaign {c['id']}: spend {c['spend_usd_micros']} != sum of clearing prices"
                f" {expected} (USD micros)"
            )
    billed_cost = int(cost[billed].sum())
    if total != f["spend_usd_micros"] or total != billed_cost:
        problems.append(
            f"total spend {f['spend_usd_micros']} != sum of clearing prices {billed_cost}"
        )
    answered = t["latency_ms"] >= 0
    after = answered & (t["latency_ms"] > t["deadline_ms"])
    if (after & (outcome != LATE)).any():
        problems.append("an answer after tmax took part in the auction")
    if (outcome[after] != LATE).any() or int((outcome == LATE).sum()) != int(after.sum()):
        problems.append("late rows and latencies after tmax disagree")
    # Answers that were late only because this process was stalled are not the fleet's.
    fleet_late = after & (t["stalled"] == 0)
    excused = req.get("late_in_client_stalls", 0)
    if req["late"] - excused > 0 or fleet_late.any():
        count = max(req["late"] - excused, len(np.unique(t["req"][fleet_late])))
        problems.append(f"{count} answers after tmax")
    return problems
