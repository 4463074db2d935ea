"""A short ``rtbfleet demo`` against a real local fleet started by the launcher (1 bidder):
its report's numbers must add up, and nothing it started may outlive it."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sim import demo


@pytest.fixture
def fleet_env(fleet_variables: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in fleet_variables.items():
        monkeypatch.setenv(name, value)
    return Path(fleet_variables["RTBFLEET_DATA_DIR"])


def _descendants() -> set[int]:
    """Live processes below this one (from /proc: their parent chain leads here)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # zombies are gone already
            parent[int(entry.name)] = int(fields[1])
    mine, me = set(), os.getpid()
    for pid in parent:
        p = pid
        while p in parent and p not in (me, 0, 1):
            p = parent[p]
        if p == me and pid != me:
            mine.add(pid)
    return mine


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


async def test_short_demo_adds_up(fleet_env: Path) -> None:
    before = _descendants()
    reports = fleet_env / "reports"
    out = io.StringIO()
    code = await demo.main(
        _args(
            "--duration",
            "4",
            "--rate",
            "150",
            "--bidders",
            "1",
            "--campaigns",
            "12",
            "--seed",
            "5",
            "--report-dir",
            str(reports),
        ),
        out=out,
    )
    text = out.getvalue()
    assert code == 0, text
    assert "Check     OK" in text
    (directory,) = reports.iterdir()
    figures = json.loads((directory / "report.json").read_text())
    req, imp = figures["requests"], figures["impressions"]
    assert req["offered"] > 300 and req["answered"] == req["offered"]
    assert req["late"] == 0 and req["timeouts"] == 0 and req["not_sent"] == 0
    assert set(req["statuses"]) <= {"200", "204"}
    assert imp["bids"] > 0, "the fleet never bid on the generated portfolio's traffic"
    assert imp["wins"] <= imp["bids"]
    rows = np.load(directory / "auctions.npz")
    won = rows["outcome"] == 7
    assert (rows["bid_usd_micros"][won] > 0).all()
    billed = rows["billed"] == 1
    assert figures["spend_usd_micros"] == int((rows["clear_usd_micros"][billed] // 1000).sum())
    assert (
        rows["latency_ms"][rows["latency_ms"] >= 0] <= rows["deadline_ms"][rows["latency_ms"] >= 0]
    ).all()
    assert (directory / "index.html").is_file() and (directory / "latency.png").is_file()
    # the bid loggers ran: their aggregates hold every bid event of the run (the exchange
    # received every bid, gave up on no request), and the report says so
    logged = figures["bid_loggers"]
    assert logged["problems"] == []
    assert f"bid loggers: {imp['bids']} bid events for {imp['bids']} bids" in "\n".join(
        logged["lines"]
    )
    assert "Loggers   " in text
    # the tracker's lines are checks that can fail (tests/sim/test_tracker_checks.py): here
    # each says OK, from the tracker's own books in Postgres
    assert "every due notice answered" in text
    notices = figures["notices"]
    assert notices["billing"]["due"] == imp["billed"] > 0
    assert all(sum(c["unanswered"].values()) == 0 for c in notices.values())
    tracker = figures["tracker"]
    assert tracker["problems"] == []
    spend = tracker["spend"]
    assert spend["equal"] and spend["tracker_micros"] == figures["spend_usd_micros"] > 0
    assert "OK, equal to the micro in every campaign" in text
    attribution = tracker["attribution"]
    assert attribution["equal"] and attribution["simulator"] == figures["users"]["installs"]
    assert "Cost per activation" in text and tracker["cost_per_activation"]
    capped = figures["frequency"]["campaigns"]
    assert capped, "the demo portfolio has no frequency cap: the check would mean nothing"
    assert all(c["over_cap_users"] == 0 for c in capped) and "no user over a cap" in text
    after = _descendants()
    assert after <= before, f"left behind: {after - before}"
