"""Writes a report to ``<dir>/``: report.json, auctions.npz (the rows), PNG plots and index.html.

Plots (matplotlib, Agg): spend against plan per campaign over simulated time, the latency
histogram, bid and win rates over simulated time, and the model's calibration against the truth.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sim.report import NOT_MEASURED, Report, to_campaign_currency


def write(report: Report, directory: Path, summary: str) -> Path:
    """Write everything; returns the path of index.html."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(
        json.dumps(report.to_json(), indent=1, sort_keys=False, default=str) + "\n"
    )
    with (directory / "auctions.npz").open("wb") as out:
        np.savez_compressed(out, allow_pickle=False, **report.table.columns)
    plots = _plots(report, directory)
    page = directory / "index.html"
    page.write_text(_page(report, summary, plots))
    return page


def _plots(report: Report, directory: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    f, t = report.figures, report.table
    series = f["series"]
    edges = np.asarray(series["edges_sim_s"]) / 3600.0
    mids = (edges[:-1] + edges[1:]) / 2

    # spend against plan: each campaign's cumulative spend and its plan (the pacer's: local
    # days, flights, dayparting), as a share of what it planned over the whole run
    paced = [r for r in (f.get("pacing") or {}).get("campaigns", []) if r.get("planned_micros")]
    if paced and len(edges) > 1:
        fig, ax = plt.subplots(figsize=(9, 5))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        top = 100.0
        for k, r in enumerate(paced):
            colour = colours[k % len(colours)]
            per_bucket = series["spend_usd_micros"].get(str(r["id"]))
            if per_bucket is None:
                spent = np.zeros(len(edges))
            else:
                cum = np.concatenate([[0], np.cumsum(per_bucket)])
                spent = np.array([to_campaign_currency(int(v), r["currency"]) for v in cum])
            share = 100 * spent / r["planned_micros"]
            top = max(top, float(share.max()))
            ax.plot(edges, share, lw=1.2, color=colour, alpha=0.85)
            plan = np.concatenate([[0], np.cumsum(r["plan_hourly_micros"])])
            hours = np.minimum(np.arange(len(plan)), edges[-1])
            ax.plot(hours, 100 * plan / r["planned_micros"], lw=0.8, ls="--", color=colour)
        ax.plot([], [], "k-", lw=1.2, label="spend")
        ax.plot([], [], "k--", lw=0.8, label="plan (same colour)")
        ax.axhline(100, color="red", lw=1, ls=":", label="the run's plan")
        ax.set_ylim(0, top * 1.1)
        ax.set_xlabel("simulated hours")
        ax.set_ylabel("% of the campaign's plan for the run")
        ax.set_title("Spend against the pacer's plan, one colour per campaign")
        ax.legend(loc="upper left")
        out.append(("spend_vs_plan.png", "Spend against plan"))
        _save(fig, directory / out[-1][0])

    # latency histogram (one value per answered request)
    answered = t["latency_ms"] >= 0
    if answered.any():
        _, first = np.unique(t["req"][answered], return_index=True)
        lat = t["latency_ms"][answered][first]
        deadlines = t["deadline_ms"][answered][first]
        fig, ax = plt.subplots(figsize=(9, 4))
        top = max(float(lat.max()), float(deadlines.min()))
        ax.hist(lat, bins=np.linspace(0, top * 1.05, 80).tolist(), color="#4472c4")
        for q, style in ((50, "-"), (99, "--")):
            ax.axvline(float(np.percentile(lat, q)), color="k", ls=style, lw=1, label=f"p{q}")
        ax.axvline(float(deadlines.min()), color="red", lw=1, label="shortest tmax")
        ax.set_yscale("log")
        ax.set_xlabel("latency, ms")
        ax.set_ylabel("requests")
        ax.set_title("Bid request latency")
        ax.legend()
        out.append(("latency.png", "Latency"))
        _save(fig, directory / out[-1][0])

    # bid and win rates over time
    offered = np.asarray(series["offered"], dtype=float)
    if offered.sum():
        bids = np.asarray(series["bids"], dtype=float)
        wins = np.asarray(series["wins"], dtype=float)
        answered = np.asarray(series["answered"], dtype=float)
        fig, ax = plt.subplots(figsize=(9, 4))
        with np.errstate(divide="ignore", invalid="ignore"):
            ax.plot(mids, 100 * np.where(answered > 0, bids / answered, np.nan), label="bid rate")
            ax.plot(mids, 100 * np.where(bids > 0, wins / bids, np.nan), label="win rate (of bids)")
        ax.set_ylim(0, 100)
        ax.set_xlabel("simulated hours")
        ax.set_ylabel("%")
        ax2 = ax.twinx()
        ax2.bar(mids, offered, width=(edges[1] - edges[0]) * 0.9, alpha=0.15, color="grey")
        ax2.set_ylabel("requests offered")
        ax.set_title("Bid and win rates over the simulated day")
        ax.legend(loc="upper left")
        out.append(("rates.png", "Bid and win rates"))
        _save(fig, directory / out[-1][0])

    # calibration against the truth
    model = f["fleet"]["model"]
    if isinstance(model, dict) and model.get("calibration"):
        cal = model["calibration"]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        pred = [b["predicted"] for b in cal]
        true = [b["true"] for b in cal]
        top = max(max(pred), max(true)) * 1.1
        ax.plot([0, top], [0, top], "k--", lw=1, label="perfect")
        ax.plot(pred, true, "o-", label="model")
        ax.set_xlabel("predicted p(click)")
        ax.set_ylabel("TRUE p(click)")
        ax.set_title(
            f"Calibration; log loss {model['log_loss_vs_truth']:.4f} "
            f"(truth {model['truth_entropy']:.4f})"
        )
        ax.legend()
        out.append(("calibration.png", "Model calibration against the truth"))
        _save(fig, directory / out[-1][0])
    return out


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _page(report: Report, summary: str, plots: list[tuple[str, str]]) -> str:
    f = report.figures
    rows = []
    for c in sorted(f["campaigns"], key=lambda c: -c["spend_usd_micros"]):
        cells = [
            str(c["id"]),
            html.escape(c["name"]),
            c.get("goal_type", ""),
            _m(c.get("goal_price_micros")),
            _m(c.get("daily_budget_micros")),
            _m(c.get("spend_micros", c["spend_usd_micros"])),
            c.get("currency", "USD"),
            _pct(c.get("spend_vs_plan")),
            _pct(c.get("overdelivery_share")),
            f"{c['bids']:,}",
            f"{c['wins']:,}",
            f"{c['clicks']:,}",
            f"{c['installs']:,}",
            "" if c.get("cost_vs_goal") is None else f"{c['cost_vs_goal']:.2f}×",
        ]
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    head = [
        "id",
        "name",
        "goal",
        "price",
        "budget/day",
        "spend",
        "cur",
        "vs&nbsp;plan",
        "over",
        "bids",
        "wins",
        "clicks",
        "installs",
        "cost&nbsp;vs&nbsp;goal",
    ]
    images = "".join(
        f'<figure><img src="{name}" alt="{html.escape(title)}"><figcaption>'
        f"{html.escape(title)}</figcaption></figure>"
        for name, title in plots
    )
    notes = []
    for label, value in (
        ("Live model", f["fleet"]["model"]),
        ("Tracked spend", f["fleet"]["tracked_spend"]),
    ):
        if isinstance(value, str) and value.startswith(NOT_MEASURED):
            notes.append(f"<li><b>{label}</b>: {html.escape(value)}</li>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rtbfleet demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 13px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: right; }}
td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>rtbfleet demo report</h1>
<pre>{html.escape(summary)}</pre>
<ul>{"".join(notes)}</ul>
{images}
<h2>Campaigns</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{"".join(rows)}</table>
<p>All figures: <a href="report.json">report.json</a>; every auction row:
<code>auctions.npz</code> (numpy).</p>
</body></html>
"""


def _m(micros: int | None) -> str:
    if micros is None:
        return ""
    whole, frac = divmod(micros, 1_000_000)
    return f"{whole:,}.{frac // 10_000:02d}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}&nbsp;%"
