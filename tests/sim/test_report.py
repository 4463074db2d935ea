from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim import calibration, render, report
from sim.ledger import LATE, LOST, NO_BID, TIMEOUT, WON, Ledger
from sim.report import CampaignPlan, FleetRecords, build, check
from sim.summary import render as render_summary

PLANS = [
    CampaignPlan(1, "one", "CPC", 500_000, 100_000_000, "USD"),
    CampaignPlan(2, "two", "CPM", 2_000_000, 50_000_000, "EUR"),
]


def _answered(ledger: Ledger, latency: float, status: int) -> None:
    ledger.requests += 1
    ledger.sent += 1
    ledger.answered += 1
    ledger.latencies_ms.append(latency)
    ledger.request_statuses[status] += 1


def make_ledger() -> Ledger:
    """A small run's books kept the way the exchange keeps them."""
    ledger = Ledger()
    rng = np.random.default_rng(1)
    for i in range(200):
        req_id = f"{i:024x}"
        t = i * 400.0
        kind = i % 5
        if kind == 0:
            _answered(ledger, 3.0, 204)
            row = ledger.add_row(
                req=ledger.requests,
                t_sim=t,
                deadline_ms=100,
                outcome=NO_BID,
                latency_ms=3.0,
                status=204,
            )
        elif kind == 4 and i % 20 == 4:
            ledger.requests += 1
            ledger.sent += 1
            ledger.request_errors["timeout"] += 1
            row = ledger.add_row(req=ledger.requests, t_sim=t, deadline_ms=100, outcome=TIMEOUT)
        else:
            _answered(ledger, 4.0 + i % 7, 200)
            ledger.bids += 1
            campaign = 1 + i % 2
            bid = 1_000_000 + 10_000 * (i % 50)
            won = kind in (1, 2)
            at = 1 if kind == 1 else 2
            clear = bid if at == 1 else bid - 100_000
            row = ledger.add_row(
                req=ledger.requests,
                t_sim=t,
                deadline_ms=100,
                latency_ms=4.0 + i % 7,
                status=200,
                outcome=WON if won else LOST,
                loss_reason=0 if won else 102,
                auction_type=at,
                campaign_id=campaign,
                creative_id=10,
                bid_usd_micros=bid,
                floor_usd_micros=500_000,
                clear_usd_micros=clear if won else 0,
                p_click=float(rng.uniform(0.002, 0.03)),
                p_install=0.05,
            )
            if won:
                ledger.wins += 1
                ledger.bill(row)
        ledger.request_index.setdefault(req_id, row)
    return ledger


def predictions(ledger: Ledger, noise: float) -> list[calibration.Prediction]:
    t = ledger.table()
    rng = np.random.default_rng(2)
    out = []
    for req_id, row in ledger.request_index.items():
        if t["bid_usd_micros"][row] > 0:
            p = float(t["p_click"][row]) * float(np.exp(rng.normal(0, noise)))
            out.append(
                calibration.Prediction(
                    f"{req_id}:1:bidder-0", "1", int(t["campaign_id"][row]), p, 0.04, 3
                )
            )
    return out


def the_report(ledger: Ledger | None = None, records: FleetRecords | None = None) -> report.Report:
    return build(
        ledger or make_ledger(),
        plans=PLANS,
        records=records,
        meta={"sim_seconds": 80_000.0, "seed": 1},
    )


def test_a_consistent_report_passes() -> None:
    r = the_report()
    assert check(r) == []
    f = r.figures
    assert f["requests"]["offered"] == 200 and f["requests"]["timeouts"] == 10
    assert f["impressions"]["wins"] == 80 == f["impressions"]["billed"]
    assert f["spend_usd_micros"] == int((r.table["clear_usd_micros"] // 1000).sum())
    c2 = next(c for c in f["campaigns"] if c["id"] == 2)
    assert c2["spend_micros"] == c2["spend_usd_micros"] * 920_000 // 1_000_000  # EUR
    assert f["fleet"]["model"].startswith(report.NOT_MEASURED)
    assert f["fleet"]["tracked_spend"].startswith(report.NOT_MEASURED)
    assert sum(f["series"]["offered"]) == 200


def test_check_catches_a_win_without_a_bid() -> None:
    r = the_report()
    row = int(np.flatnonzero(r.table["outcome"] == WON)[0])
    r.table["bid_usd_micros"][row] = 0
    assert any("wins without a bid" in p for p in check(r))
    r = the_report()
    r.figures["impressions"]["wins"] += 1
    assert any("wins" in p for p in check(r))


def test_check_catches_spend_that_is_not_the_sum_of_clearing_prices() -> None:
    r = the_report()
    r.figures["campaigns"][0]["spend_usd_micros"] += 1
    problems = check(r)
    assert any("sum of clearing prices" in p for p in problems)
    r = the_report()
    row = int(np.flatnonzero(r.table["billed"] == 1)[0])
    r.table["clear_usd_micros"][row] += 5000  # the row says more than was counted
    assert any("sum of clearing prices" in p for p in check(r))


def test_check_catches_a_late_answer() -> None:
    r = the_report()
    row = int(np.flatnonzero(r.table["outcome"] == NO_BID)[0])
    r.table["latency_ms"][row] = 150.0  # deadline 100
    problems = check(r)
    assert any("after tmax" in p for p in problems)
    r = the_report()
    r.table["outcome"][row] = LATE
    r.figures["impressions"]["outcomes"]["late"] = 1
    r.figures["impressions"]["outcomes"]["no_bid"] -= 1
    assert any("after tmax" in p for p in check(r))


def test_check_catches_counts_that_do_not_add_up() -> None:
    r = the_report()
    r.figures["requests"]["answered"] -= 1
    assert check(r)
    r = the_report()
    r.table["billed"][int(np.flatnonzero(r.table["outcome"] == LOST)[0])] = 1
    assert any("not won" in p for p in check(r))
    r = the_report()
    won_first = np.flatnonzero((r.table["outcome"] == WON) & (r.table["auction_type"] == 1))
    r.table["clear_usd_micros"][won_first[0]] -= 1
    assert any("first-price" in p for p in check(r))


def test_model_against_truth() -> None:
    ledger = make_ledger()
    good = FleetRecords(connected=True, predictions=predictions(ledger, 0.05))
    bad = FleetRecords(connected=True, predictions=predictions(ledger, 1.0))
    g = the_report(ledger, good).figures["fleet"]["model"]
    b = the_report(ledger, bad).figures["fleet"]["model"]
    assert g["joined"] == g["predictions"] == 150
    assert 0 <= g["excess_log_loss"] < b["excess_log_loss"]
    assert g["beats_constant"] and not b["beats_constant"]
    assert g["model_versions"] == {"3": 150}
    assert len(g["calibration"]) == 10
    unjoinable = FleetRecords(
        connected=True, predictions=[calibration.Prediction("zzz:1:b", "1", 1, 0.1, 0.1, 0)]
    )
    assert the_report(ledger, unjoinable).figures["fleet"]["model"].startswith(report.NOT_MEASURED)


def test_write_report(tmp_path: Path) -> None:
    ledger = make_ledger()
    r = the_report(ledger, FleetRecords(connected=True, predictions=predictions(ledger, 0.2)))
    text = render_summary(r, check(r))
    assert "Check     OK" in text and "Model" in text
    page = render.write(r, tmp_path, text)
    assert page.read_text().startswith("<!doctype html>")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["impressions"]["wins"] == 80
    for png in ("spend_vs_plan.png", "latency.png", "rates.png", "calibration.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    with np.load(tmp_path / "auctions.npz") as saved:
        assert len(saved["req"]) == len(r.table)


@pytest.mark.parametrize("broken", [True, False])
def test_summary_lists_problems(broken: bool) -> None:
    r = the_report()
    if broken:
        r.figures["spend_usd_micros"] += 7
    text = render_summary(r, check(r))
    assert ("FAILED" in text) == broken


def test_late_answers_during_client_stalls_are_not_the_fleets() -> None:
    r = the_report()
    row = int(np.flatnonzero(r.table["outcome"] == NO_BID)[0])
    r.table["latency_ms"][row] = 150.0
    r.table["outcome"][row] = LATE
    r.figures["impressions"]["outcomes"]["late"] = 1
    r.figures["impressions"]["outcomes"]["no_bid"] -= 1
    r.figures["requests"]["late"] = 1
    r.table["stalled"][row] = 1
    r.figures["requests"]["late_in_client_stalls"] = 1
    assert check(r) == []
    r.table["stalled"][row] = 0
    r.figures["requests"]["late_in_client_stalls"] = 0
    assert any("after tmax" in p for p in check(r))
