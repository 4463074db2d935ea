"""A bidder process started with a scaled fleet clock bids by the simulated hour, not the wall's.

One campaign may bid only during one hour of the day (UTC), chosen twelve hours away from the
wall clock's hour. A bidder on wall time must not bid; one whose fleet clock reads that hour
(scaled 60x: the hour lasts a real minute) must."""

from __future__ import annotations

import http.client
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest_bidder import BidderProcess, banner_request, post

from sim.portfolio import catch_all


def _portfolio(directory: Path, hour: int) -> Path:
    document = catch_all()
    document["campaigns"][0]["timezone"] = "UTC"
    document["campaigns"][0]["targeting"] = {"hours_of_week": [d * 24 + hour for d in range(7)]}
    path = directory / "one-hour.json"
    path.write_text(json.dumps(document))
    return path


def _bid(bidder: BidderProcess, rid: str) -> int:
    """The status of one bid request. An answer that would come after tmax is not sent at all
    (the connection closes): on a loaded machine that happens, and the request is sent again."""
    body = json.dumps(banner_request(rid, tmax=250)).encode()
    for _ in range(4):
        try:
            status, _ = post(
                bidder.url + "/openrtb2/bid", body, {"Content-Type": "application/json"}
            )
            return status
        except (http.client.RemoteDisconnected, ConnectionResetError):
            continue
    raise AssertionError(f"four answers to {rid} dropped past tmax:\n{bidder.log()}")


def test_dayparting_follows_the_fleet_clock(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    hour = (now.hour + 12) % 24
    # Fleet time reads <hour>:05 today at the wall time the processes start: 55 real seconds
    # of that simulated hour remain at 60x.
    simulated = now.replace(hour=hour, minute=5, second=0, microsecond=0)
    portfolio = _portfolio(tmp_path, hour)
    base = {"RTBFLEET_BIDDER_PORTFOLIO_FILE": str(portfolio)}
    scaled_env = {
        **base,
        "RTBFLEET_CLOCK_SCALE": "60",
        "RTBFLEET_CLOCK_ORIGIN": repr(time.time()),
        "RTBFLEET_CLOCK_START": simulated.isoformat(),
    }
    wall = BidderProcess(base, tmp_path / "wall.log")
    scaled = BidderProcess(scaled_env, tmp_path / "scaled.log")
    try:
        wall.wait_ready()
        scaled.wait_ready()
        assert _bid(scaled, "in-the-simulated-hour") == 200, scaled.log()
        assert _bid(wall, "outside-the-wall-hour") == 204, wall.log()
    finally:
        assert wall.stop() == 0
        assert scaled.stop() == 0


def test_the_clock_moves_into_the_campaign_s_hour(tmp_path: Path) -> None:
    """Scaled 360x, a simulated hour lasts ten real seconds: the bidder starts in the hour
    before the campaign's, refuses it, and bids once fleet time has entered its hour."""
    now = datetime.now(UTC)
    hour = (now.hour + 12) % 24
    before = now.replace(hour=hour, minute=0, second=0, microsecond=0) - timedelta(hours=1)
    origin = time.time()
    env = {
        "RTBFLEET_BIDDER_PORTFOLIO_FILE": str(_portfolio(tmp_path, hour)),
        "RTBFLEET_CLOCK_SCALE": "360",
        "RTBFLEET_CLOCK_ORIGIN": repr(origin),
        "RTBFLEET_CLOCK_START": before.isoformat(),
    }
    bidder = BidderProcess(env, tmp_path / "moving.log")
    try:
        bidder.wait_ready()
        refused = 0
        while time.time() < origin + 9.0:  # fleet time in the hour before the campaign's
            assert _bid(bidder, "too-early") == 204, bidder.log()
            refused += 1
            time.sleep(0.2)
        assert refused > 0, "the bidder took the whole hour before to start; nothing shown"
        while time.time() < origin + 10.5:
            time.sleep(0.05)
        statuses = []
        while time.time() < origin + 19.0:  # fleet time inside the campaign's hour
            statuses.append(_bid(bidder, "in-the-hour"))
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
        assert statuses[-1] == 200, (statuses, bidder.log())
    finally:
        assert bidder.stop() == 0
