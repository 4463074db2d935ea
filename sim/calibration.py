"""The live model against the truth: join the bidder's BidEvents to the exchange's rows by
transaction id and compare each predicted p(click) with the TRUE p(click) of that impression.

With truth p and prediction q, the expected log loss of q on an impression is the cross-entropy
-(p ln q + (1-p) ln(1-q)); the best possible (q = p) is the entropy of p. The excess (their
difference, the KL divergence) is what the model can still learn; a constant prediction at the
mean truth is the baseline a model must beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.ledger import AuctionTable

EPS = 1e-6


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """What a BidEvent says the bidder predicted for one bid."""

    txid: str
    imp_id: str
    campaign_id: int
    p_click: float
    p_install: float
    model_version: int
    p_win: float = 0.0  # the bidder's P(win | bid) as priced (0: not sent)
    value_cpm_micros: int = 0  # what the impression was worth to the bidder (bidding currency)
    bid_cpm_micros: int = 0  # the bid in the same currency


def row_of(pred: Prediction, request_index: Mapping[str, int], table: AuctionTable) -> int | None:
    """The table row a prediction is about, or None (request unknown or campaign differs).

    Transaction ids are ``<request id>:<imp id>:<bidder id>``; a txid that is the request id
    itself is accepted too. Rows of one request are consecutive, in the order of its imps.
    """
    first = request_index.get(pred.txid)
    if first is None:
        first = request_index.get(pred.txid.split(":", 1)[0])
    if first is None:
        return None
    req = table["req"][first]
    row = first
    n = len(table)
    while row < n and table["req"][row] == req:
        if table["campaign_id"][row] == pred.campaign_id and (
            not pred.imp_id or _imp_matches(row - first, pred.imp_id)
        ):
            return row
        row += 1
    return None


def _imp_matches(offset: int, imp_id: str) -> bool:
    return not imp_id.isdigit() or int(imp_id) == offset + 1


def cross_entropy(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> float:
    q = np.clip(q, EPS, 1 - EPS)
    return float(np.mean(-(p * np.log(q) + (1 - p) * np.log(1 - q))))


def compare(
    predictions: Iterable[Prediction],
    request_index: Mapping[str, int],
    table: AuctionTable,
    bins: int = 10,
) -> dict[str, Any]:
    """Figures of the predictions that joined; ``{"joined": 0, ...}`` when none did."""
    rows: list[int] = []
    q_click: list[float] = []
    q_install: list[float] = []
    versions: dict[int, int] = {}
    total = 0
    for pred in predictions:
        total += 1
        row = row_of(pred, request_index, table)
        if row is None:
            continue
        rows.append(row)
        q_click.append(pred.p_click)
        q_install.append(pred.p_install)
        versions[pred.model_version] = versions.get(pred.model_version, 0) + 1
    out: dict[str, Any] = {"predictions": total, "joined": len(rows)}
    if not rows:
        return out
    idx = np.asarray(rows)
    p = table["p_click"][idx].astype(np.float64)
    q = np.asarray(q_click, dtype=np.float64)
    mean_p = float(p.mean())
    ce = cross_entropy(p, q)
    entropy = cross_entropy(p, p)
    baseline = cross_entropy(p, np.full_like(p, mean_p))
    out.update(
        {
            "model_versions": {str(k): v for k, v in sorted(versions.items())},
            "mean_predicted": float(q.mean()),
            "mean_true": mean_p,
            "log_loss_vs_truth": ce,
            "truth_entropy": entropy,
            "excess_log_loss": ce - entropy,
            "constant_baseline_excess": baseline - entropy,
            "beats_constant": ce < baseline,
            "calibration": _calibration(q, p, bins),
        }
    )
    pi = table["p_install"][idx].astype(np.float64)
    qi = np.asarray(q_install, dtype=np.float64)
    if qi.any():
        out["install"] = {
            "mean_predicted": float(qi.mean()),
            "mean_true": float(pi.mean()),
            "log_loss_vs_truth": cross_entropy(pi, qi),
            "truth_entropy": cross_entropy(pi, pi),
        }
    return out


def _calibration(
    q: npt.NDArray[np.float64], p: npt.NDArray[np.float64], bins: int
) -> list[dict[str, float]]:
    """Equal-count bins of the prediction: mean predicted vs mean true in each."""
    order = np.argsort(q, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            out.append(
                {
                    "predicted": float(q[chunk].mean()),
                    "true": float(p[chunk].mean()),
                    "count": float(len(chunk)),
                }
            )
    return out
