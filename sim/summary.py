"""The report as a person reads it in a terminal."""

from __future__ import annotations

from typing import Any

from fleet.money import format_micros
from sim import auction, frequency_check, learning, pacing_report
from sim.loggercounts import logger_summary
from sim.report import Report, notice_problems

LOSS_NAMES = {
    auction.WON: "won",
    auction.EXPIRED: "late (expired)",
    auction.INVALID_RESPONSE: "invalid response",
    auction.INVALID_DEAL: "invalid deal",
    auction.INVALID_AUCTION_ID: "wrong auction id",
    auction.MISSING_MARKUP: "no markup",
    auction.MISSING_CREATIVE_ID: "no creative id",
    auction.MISSING_PRICE: "no price",
    auction.BELOW_FLOOR: "below floor",
    auction.BELOW_DEAL_FLOOR: "below deal floor",
    auction.OUTBID: "outbid",
    auction.LOST_TO_DEAL: "lost to a deal",
    auction.SIZE_NOT_ALLOWED: "wrong size",
    auction.ADVERTISER_EXCLUDED: "advertiser blocked",
    auction.CATEGORY_EXCLUDED: "category blocked",
}


def _n(value: int | float) -> str:
    return f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _money(micros: int | None, currency: str = "") -> str:
    if micros is None:
        return "—"
    whole, frac = divmod(abs(micros), 1_000_000)
    sign = "-" if micros < 0 else ""
    return f"{sign}{whole:,}.{frac // 10_000:02d}" + (f" {currency}" if currency else "")


def render(report: Report, problems: list[str], location: str = "") -> str:
    f, m = report.figures, report.meta
    req, imp, lat = f["requests"], f["impressions"], f["latency_ms"]
    lines = [
        f"rtbfleet demo — seed {m.get('seed')}, {m.get('duration', 0):.0f} s of traffic at "
        f"{m.get('rate', 0):.0f} req/s (mean, open loop), time ×{m.get('time_scale', 1):.0f}: "
        f"{m.get('sim_seconds', 0) / 3600:.1f} simulated hours",
        f"Traffic   {_n(req['offered'])} requests offered, {_n(req['answered'])} answered, "
        f"{_n(req['late'])} after tmax, {_n(req['timeouts'])} timeouts, "
        f"{_n(req['not_sent'])} not sent, {_n(req['transport_errors'])} transport errors",
        "          HTTP "
        + ", ".join(f"{k}: {_n(v)}" for k, v in req["statuses"].items())
        + f"; gzip {_n(req['gzip'])}; OpenRTB "
        + ", ".join(f"{k}: {_n(v)}" for k, v in sorted(req["versions"].items())),
    ]
    if lat.get("count"):
        lines.append(
            f"Latency   p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f}, p99 {lat['p99']:.1f}, "
            f"max {lat['max']:.1f}  (client scheduling lag p99 "
            f"{f['schedule_lag_ms'].get('p99', 0):.1f} ms)"
        )
    stalls = req.get("client_stall_seconds", 0.0)
    behind = req["errors"].get("behind", 0)
    if stalls >= 0.5 or behind:
        lines.append(
            f"Client    this process stalled {stalls:.1f} s in all (an overloaded machine?): "
            f"{_n(behind)} requests not sent (client behind), "
            f"{_n(req.get('late_in_client_stalls', 0))} late answers and "
            f"{_n(req.get('timeouts_in_client_stalls', 0))} timeouts during its stalls "
            "are not held against the fleet"
        )
    lines.append(
        f"Auctions  {_n(imp['offered'])} impressions, {_n(imp['bids'])} bids "
        f"({_pct(imp['bid_rate'])}), {_n(imp['wins'])} wins ({_pct(imp['win_rate'])} of bids), "
        f"{_n(imp['billed'])} billed"
    )
    losses = {
        LOSS_NAMES.get(int(k), f"reason {k}"): v
        for k, v in imp["loss_reasons"].items()
        if int(k) != auction.WON
    }
    if losses:
        lines.append("          losses: " + ", ".join(f"{k} {_n(v)}" for k, v in losses.items()))
    lines.append(f"Spend     {_money(f['spend_usd_micros'], 'USD')} (exchange billing)")
    campaigns = [c for c in f["campaigns"] if c["bids"] or c.get("daily_budget_micros")]
    if campaigns:
        lines.append(
            "  campaign                         goal          budget/day       spend  vs plan"
            "   over   cost vs goal"
        )
        for c in sorted(campaigns, key=lambda c: -c["spend_usd_micros"])[:15]:
            name = f"{c['id']} {c['name']}"[:30]
            if "daily_budget_micros" in c:
                cur = c["currency"]
                goal = f"{c['goal_type']} {_money(c['goal_price_micros'])}"
                lines.append(
                    f"  {name:<30} {goal:>12} {_money(c['daily_budget_micros']):>12} "
                    f"{_money(c['spend_micros']):>11} {_pct(c['spend_vs_plan']):>8} "
                    f"{_pct(c['overdelivery_share']):>6}   "
                    + (f"{c['cost_vs_goal']:.2f}×" if c.get("cost_vs_goal") is not None else "—")
                    + f" {cur}"
                )
            else:
                lines.append(
                    f"  {name:<30} {'(not in the portfolio)':>25} "
                    f"{_money(c['spend_usd_micros']):>11} USD"
                )
        if len(campaigns) > 15:
            lines.append(f"  … and {len(campaigns) - 15} more in the HTML report")
    users = f["users"]
    ctr = users["clicks"] / imp["billed"] if imp["billed"] else None
    lines.append(
        f"Users     {_n(users['clicks'])} clicks (CTR {_pct(ctr)}), {_n(users['installs'])} "
        f"installs, {_n(users['events'])} in-app events, revenue "
        f"{_money(users['revenue_micros'], 'USD')}"
    )
    notice_parts = []
    for kind, c in f["notices"].items():
        if not c["due"]:
            continue
        unanswered = sum(c["unanswered"].values())
        part = f"{kind} {_n(c['answered'])}/{_n(c['due'])}"
        if unanswered:
            why = ", ".join(c["unanswered"])
            part += f" ({_n(unanswered)} unanswered: {why})"
        if c["pending_at_end"]:
            part += f" (+{_n(c['pending_at_end'])} due after the end)"
        notice_parts.append(part)
    notices_ok = not notice_problems(f["notices"])
    lines.append(
        "Notices   answered/due: "
        + ("; ".join(notice_parts) or "none")
        + (": OK, every due notice answered" if notices_ok else ": FAILED (see Check)")
    )
    fleet = f["fleet"]
    model = fleet["model"]
    if isinstance(model, str):
        lines.append(f"Model     {model}")
    else:
        lines.append(
            f"Model     {_n(model['joined'])} predictions joined to the truth: log loss "
            f"{model['log_loss_vs_truth']:.5f} vs truth entropy {model['truth_entropy']:.5f} "
            f"(excess {model['excess_log_loss']:.5f}; a constant would be "
            f"{model['constant_baseline_excess']:.5f}); mean p(click) predicted "
            f"{model['mean_predicted']:.4f}, true {model['mean_true']:.4f}"
        )
    if "learning" in f:
        lines.extend(learning.summary_lines(f["learning"]))
    lines += _tracker_lines(f, fleet["tracked_spend"])
    lines += pacing_report.lines(f.get("pacing"))
    pol = f["policy"]
    lines.append(
        f"Policy    bids on crawlers {pol['bids_on_crawlers']}; contextual-only traffic: "
        f"{pol['bids_without_gdpr_consent']} bids without GDPR consent, "
        f"{pol['bids_on_coppa']} on COPPA inventory"
    )
    lines.append(frequency_check.line(f.get("frequency")))
    lines += logger_summary(f)
    if problems:
        lines.append(f"Check     FAILED ({len(problems)}):")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append(
            "Check     OK: every win has a bid, spend = sum of clearing prices, "
            "no answer after tmax, counts add up"
        )
    if location:
        lines.append(f"Report    {location}")
    return "\n".join(lines)


def _tracker_lines(f: dict[str, Any], bus: Any) -> list[str]:
    """Tracked, Attribution and Cost per activation: the tracker's books (sim.trackercounts)
    beside the exchange's; without them (no Postgres to read), what the bus carried."""
    books = f.get("tracker")
    if not books or "spend" not in books:
        if books:
            return [f"Tracked   FAILED: {'; '.join(books.get('problems', ()))}"]
        text = (
            bus
            if isinstance(bus, str)
            else (
                f"{_n(bus['billing_events'])} billing events on the bus, cost "
                f"{format_micros(bus['cost_micros'])} (the tracker's books not read: no Postgres)"
            )
        )
        return [f"Tracked   {text}"]
    spend, attribution = books["spend"], books["attribution"]
    billing = f["notices"].get("billing", {})
    lines = [
        f"Tracked   tracker spend {format_micros(spend['tracker_micros'])} vs exchange billing "
        f"{format_micros(spend['exchange_micros'])} (micros, campaign currency; "
        f"{_n(billing.get('due', 0))} billing notices, {_n(billing.get('duplicates', 0))} "
        "sent twice): "
        + ("OK, equal to the micro in every campaign" if spend["equal"] else "FAILED"),
        f"Attribution {_n(attribution['attributed'])} installs attributed to our clicks, the "
        f"simulator counted {_n(attribution['simulator'])} ({_n(attribution['organic'])} "
        "organic): " + ("OK, equal in every campaign" if attribution["equal"] else "FAILED"),
    ]
    rows = books["cost_per_activation"]
    if not rows:
        return [*lines, "Cost per activation: no spend tracked"]
    lines.append(
        "Cost per activation  campaign                      activation     spend  activations"
        "        CPA   target"
    )
    for r in sorted(rows, key=lambda r: -r["spend_micros"])[:15]:
        name = f"{r['id']} {r['name']}"[:28]
        lines.append(
            f"  {name:<28} {r['activation']:>14} {_money(r['spend_micros']):>9} "
            f"{_n(r['activations']):>12} {_money(r['cpa_micros']):>10} "
            f"{_money(r['target_micros']):>8} {r['currency']}"
        )
    if len(rows) > 15:
        lines.append(f"  … and {len(rows) - 15} more in report.json")
    return lines
