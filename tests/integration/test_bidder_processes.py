"""``python -m bidder`` with several server processes sharing one port: all of them serve,
/metrics on any of them shows the whole bidder, a crashed server comes back, SIGTERM stops
everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest_bidder import BidderProcess, banner_request, metric, post, write_catch_all


def get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def test_two_servers_share_the_port_and_stop_cleanly(tmp_path: Path) -> None:
    bidder = BidderProcess(
        {
            "RTBFLEET_BIDDER_PROCESSES": "2",
            "RTBFLEET_BIDDER_PORTFOLIO_FILE": str(write_catch_all(tmp_path)),
            "RTBFLEET_BIDDER_ID": "itest",
        },
        tmp_path / "bidder.log",
    )
    try:
        bidder.wait_ready()
        servers = bidder.children()
        assert len(servers) == 2, bidder.log()
        seen: set[str] = set()
        sent = 0
        deadline = time.monotonic() + 15
        while seen != {"itest-0", "itest-1"} or sent < 40:  # the second may still be starting
            assert time.monotonic() < deadline, (seen, bidder.log())
            request = json.dumps(banner_request(f"m{sent}")).encode()
            status, body = post(f"{bidder.url}/openrtb2/bid", request)  # a new connection each
            assert status == 200, bidder.log()
            sent += 1
            seen.add(json.loads(body)["seatbid"][0]["bid"][0]["id"].rsplit(":", 1)[1])
        text = get(f"{bidder.url}/metrics")
        assert metric(text, "bidder_requests_total", outcome="bid", reason="bid") == sent, text

        os.kill(servers[0], signal.SIGKILL)  # a crash: the supervisor starts a new one
        deadline = time.monotonic() + 15
        while len(set(bidder.children()) - set(servers)) < 1:
            assert time.monotonic() < deadline, bidder.log()
            time.sleep(0.05)
        bidder.wait_ready()
        for i in range(10):
            request = json.dumps(banner_request(f"n{i}")).encode()
            status, _ = post(f"{bidder.url}/openrtb2/bid", request)
            assert status == 200, bidder.log()
        current = bidder.children()
    finally:
        code = bidder.stop()
    assert code == 0, bidder.log()
    for pid in current:
        assert not Path(f"/proc/{pid}").exists(), f"server {pid} outlived the supervisor"
    assert "restarting" in bidder.log(), bidder.log()
