"""A new, tracker-shaped service added as a few lines with no edit in fleet/: a package made
here in a temporary directory (settings, a component on the service skeleton, a registration,
and the *.dist-info with entry_points.txt that an install would write), put on PYTHONPATH.
The kernel's own command line registers it, lists its settings, and `rtbfleet up` starts it
in its order and waits for its health URL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from fleet.processes import free_port

FILES = {
    "tracky/__init__.py": '"""A tracker-shaped test service."""\n',
    "tracky/settings.py": """
        import dataclasses

        from fleet.settings import FleetSettings, port, setting


        @dataclasses.dataclass(frozen=True)
        class TrackySettings:
            port: int = setting(8097, "RTBFLEET_TRACKY_PORT", "tracky HTTP port", port)
            fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)
    """,
    "tracky/__main__.py": """
        import os
        import sys

        from prometheus_client import Gauge

        from fleet.service import run_service
        from tracky.settings import TrackySettings


        class Tracky:
            def __init__(self, settings, runtime):
                self.up = Gauge("tracky_up", "1 once started", registry=runtime.registry)
                # What the launcher told it about the fleet: where the bidder listens.
                self.bidder_port = Gauge("tracky_bidder_port", "port", registry=runtime.registry)

            async def start(self):
                self.up.set(1)
                self.bidder_port.set(int(os.environ.get("RTBFLEET_BIDDER_PORT", "0")))

            async def stop(self):
                self.up.set(0)


        sys.exit(
            run_service("tracky", TrackySettings, Tracky, health=lambda s: ("127.0.0.1", s.port))
        )
    """,
    "tracky/registration.py": """
        from fleet.registry import Service

        SERVICE = Service(
            name="tracky",
            module="tracky",
            settings="tracky.settings:TrackySettings",
            health_path="/readyz",
            port_setting="RTBFLEET_TRACKY_PORT",
            url_setting="RTBFLEET_TRACKY_URL",
            order=50,
        )
    """,
    "tracky-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tracky\nVersion: 0.1\n",
    "tracky-0.1.dist-info/entry_points.txt": (
        "[rtbfleet.services]\ntracky = tracky.registration:SERVICE\n"
    ),
}


@pytest.fixture
def plugin_env(fleet_variables: dict[str, str], tmp_path: Path) -> dict[str, str]:
    for name, text in FILES.items():
        path = tmp_path / "site" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBFLEET_")}
    env.update(fleet_variables)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["RTBFLEET_TRACKY_PORT"] = str(free_port())
    return env


def rtbfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_package_on_the_path_is_registered_and_listed(plugin_env: dict[str, str]) -> None:
    services = rtbfleet(plugin_env, "services")
    assert services.returncode == 0, services.stderr
    order = [line.split()[1] for line in services.stdout.splitlines()[1:]]
    assert order == ["cache-watcher", "tracky", "tracker", "bidder"]  # 10, 50, 60, 90
    settings = rtbfleet(plugin_env, "settings")
    assert settings.returncode == 0, settings.stderr
    rows = [line.split() for line in settings.stdout.splitlines()]
    assert ["tracky", "RTBFLEET_TRACKY_PORT", "8097", "tracky", "HTTP", "port"] in rows


def test_rtbfleet_up_starts_it_and_waits_for_its_health(plugin_env: dict[str, str]) -> None:
    port = plugin_env["RTBFLEET_TRACKY_PORT"]
    up = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "up"],
        env=plugin_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("rtbfleet is up"):
                break
        banner = output[-1] if output else ""
        assert banner.startswith("rtbfleet is up"), "".join(output[-40:])
        assert f"tracky http://127.0.0.1:{port}" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert "tracky_up 1.0" in metrics
        bidder_port = plugin_env["RTBFLEET_BIDDER_PORT"]
        assert f"tracky_bidder_port {float(bidder_port)}" in metrics
    finally:
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
        output.append(rest)
    assert up.returncode == 0, "".join(output[-40:])
    log = Path(plugin_env["RTBFLEET_DATA_DIR"]) / "logs" / "tracky.log"
    assert "tracky started" in log.read_text()
    assert "tracky stopping" in log.read_text()
