"""`rtbfleet up` as a user runs it: starts, migrates, serves, stops cleanly, keeps its data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sim.portfolio import generate


@pytest.fixture
def fleet_env(fleet_variables: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
    return {**env, **fleet_variables}


def rtbfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Up:
    """A running `rtbfleet up`, read line by line until it says it is up."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        deadline = time.monotonic() + 120
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("rtbfleet is up"):
                return
        self.process.kill()
        raise AssertionError("rtbfleet up did not come up:\n" + "".join(self.output[-40:]))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self.output.append(out)
        return self.process.returncode


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_up_serves_stops_cleanly_and_keeps_data(fleet_env: dict[str, str], tmp_path: Path) -> None:
    data_dir = fleet_env["RTBFLEET_DATA_DIR"]
    bus_port = fleet_env["RTBFLEET_EVENT_BUS_IN"].rsplit(":", 1)[1]
    up = Up(fleet_env)
    try:
        good = tmp_path / "good.yaml"
        good.write_text(yaml.safe_dump(generate(4, seed=2)))
        loaded = rtbfleet(fleet_env, "campaigns", "load", str(good))
        assert loaded.returncode == 0, loaded.stderr
        assert "4 campaign(s)" in loaded.stdout

        bad_doc = generate(6, seed=3)
        bad_doc["campaigns"][1]["goal_type"] = "CPX"
        bad_doc["campaigns"][5]["creatives"][0]["w"] = 0
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(bad_doc))
        refused = rtbfleet(fleet_env, "campaigns", "load", str(bad))
        assert refused.returncode == 2
        lines = refused.stderr.strip().splitlines()
        assert any(line.startswith("campaigns[1].goal_type:") for line in lines)
        assert any(line.startswith("campaigns[5].creatives[0].w:") for line in lines)
        assert lines[-1] == "rtbfleet: 2 error(s); nothing was written"
    finally:
        assert up.stop() == 0, "".join(up.output[-40:])
    assert "rtbfleet: stopped" in "".join(up.output)
    # Nothing left behind: no Postgres on our data directory, no proxy on our ports.
    assert processes_mentioning(data_dir) == []
    assert processes_mentioning(f"127.0.0.1:{bus_port}") == []

    up = Up(fleet_env)
    try:
        listed = rtbfleet(fleet_env, "campaigns", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        campaigns = json.loads(listed.stdout)
        assert [c["id"] for c in campaigns] == [1, 2, 3, 4]  # the refused file wrote nothing
    finally:
        assert up.stop() == 0
    assert processes_mentioning(data_dir) == []
