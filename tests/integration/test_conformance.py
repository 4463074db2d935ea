"""Real OpenRTB requests from other projects against a running bidder with the catch-all
portfolio (``../shared/conformance/replay.py``): no failures, and bids on at least half of the
valid requests. The corpus is not part of this repository; without it the test is skipped
locally and fails in CI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_bidder import BidderProcess

from fleet.portfolio import load_document
from sim.portfolio import catch_all

REPO = Path(__file__).resolve().parents[2]
REPLAY = REPO.parent / "shared" / "conformance" / "replay.py"


def test_replayed_real_requests_pass(pg_dsn: str, tmp_path: Path) -> None:
    if not REPLAY.is_file():
        message = f"conformance corpus not found at {REPLAY}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    asyncio.run(load_document(pg_dsn, catch_all()))
    bidder = BidderProcess({"RTBFLEET_PG_DSN": pg_dsn}, tmp_path / "bidder.log")
    try:
        bidder.wait_ready()
        result = subprocess.run(
            [
                sys.executable,
                str(REPLAY),
                "--url",
                f"{bidder.url}/openrtb2/bid",
                "--min-bid-rate",
                "0.5",
                "--show",
                "50",
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        code = bidder.stop()
    report = result.stdout + result.stderr
    print(report)
    assert result.returncode == 0, report
    assert report.strip().splitlines()[-1].endswith(" 0 failed"), report
    assert code == 0, bidder.log()
