"""What learning did over the run, against the simulator's truth: the live model in the last
quarter of the simulated day (where a learner has had most of the day to learn), and the win
rate per simulated hour (which falls towards the target as the learnt market model shades
first-price bids).

The aim of the model line: in the last quarter, the model's excess log loss over the truth is at
most half of a constant predictor's (the constant is the mean true p(click) of the same
impressions). Reads only the report's inputs (bid events seen on the bus, the exchange's rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

import numpy as np

from sim import calibration
from sim.calibration import Prediction
from sim.ledger import WON, AuctionTable

AIM: Final = 0.5  # excess over the truth, as a share of the constant's, in the last quarter
HOUR: Final = 3600.0


def fleet_defaults(environ: MutableMapping[str, str]) -> None:
    """Learner settings for a demo, unless set: a simulated day passes in minutes, so models are
    exported every few seconds and the click window is an hour of simulated time."""
    environ.setdefault("RTBFLEET_LEARNER_EXPORT_INTERVAL_S", "5")
    environ.setdefault("RTBFLEET_LEARNER_FLUSH_INTERVAL_S", "0.5")
    environ.setdefault("RTBFLEET_LEARNER_CLICK_WINDOW_S", "3600")
    environ.setdefault("RTBFLEET_LEARNER_BID_TTL_S", "3600")


def last_quarter(
    predictions: Iterable[Prediction],
    request_index: Mapping[str, int],
    table: AuctionTable,
    sim_seconds: float,
) -> dict[str, Any] | str:
    """The model against the truth on the impressions of the last quarter of simulated time."""
    start = 0.75 * sim_seconds
    rows: list[int] = []
    q: list[float] = []
    versions: set[int] = set()
    for pred in predictions:
        row = calibration.row_of(pred, request_index, table)
        if row is None or table["t_sim"][row] < start:
            continue
        rows.append(row)
        q.append(pred.p_click)
        versions.add(pred.model_version)
    if not rows:
        return "not measured: no bid event of the last quarter matched a bid we saw"
    p = table["p_click"][np.asarray(rows)].astype(np.float64)
    qa = np.asarray(q, dtype=np.float64)
    entropy = calibration.cross_entropy(p, p)
    excess = calibration.cross_entropy(p, qa) - entropy
    constant = calibration.cross_entropy(p, np.full_like(p, float(p.mean()))) - entropy
    share = excess / constant if constant > 0 else None
    return {
        "from_sim_s": start,
        "joined": len(rows),
        "excess_log_loss": excess,
        "constant_excess": constant,
        "excess_share_of_constant": share,
        "aim_met": share is not None and share <= AIM,
        "learnt_models": sorted(v for v in versions if v > 0),
    }


def win_rate_by_hour(table: AuctionTable, sim_seconds: float) -> list[float | None]:
    """Wins over bids per simulated hour (None for an hour without a bid)."""
    hours = max(1, int(np.ceil(max(sim_seconds, 1.0) / HOUR)))
    which = np.clip((table["t_sim"] // HOUR).astype(np.int64), 0, hours - 1)
    has_bid = table["bid_usd_micros"] > 0
    bids = np.bincount(which[has_bid], minlength=hours)
    wins = np.bincount(which[has_bid & (table["outcome"] == WON)], minlength=hours)
    return [float(w / b) if b else None for w, b in zip(wins.tolist(), bids.tolist(), strict=True)]


def figures(
    predictions: Iterable[Prediction],
    request_index: Mapping[str, int],
    table: AuctionTable,
    sim_seconds: float,
) -> dict[str, Any]:
    """The report's ``learning`` figures (sim.report calls this once)."""
    return {
        "model_last_quarter": last_quarter(predictions, request_index, table, sim_seconds),
        "win_rate_by_hour": win_rate_by_hour(table, sim_seconds),
    }


def summary_lines(learning: Mapping[str, Any]) -> list[str]:
    """The report's lines for these figures."""
    m = learning["model_last_quarter"]
    if isinstance(m, str):
        line = f"Learning  {m}"
    else:
        share = m["excess_share_of_constant"]
        verdict = "aim met" if m["aim_met"] else f"aim (<= {AIM:.0%} of the constant's) NOT met"
        line = (
            f"Learning  last quarter: excess log loss {m['excess_log_loss']:.5f} over the truth, "
            f"a constant's {m['constant_excess']:.5f}"
            + (f" ({share:.0%}; {verdict})" if share is not None else "")
            + f"; learnt models used: {len(m['learnt_models'])}"
        )
    rates = " ".join("-" if r is None else f"{r:.0%}" for r in learning["win_rate_by_hour"])
    return [line, f"Win rate  per simulated hour: {rates}"]
