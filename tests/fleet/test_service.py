"""The service skeleton in one process: readiness, metrics, signals, clean stop, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import urllib.error
import urllib.request

import pytest
from prometheus_client import Counter

from fleet.errors import FleetError
from fleet.service import Runtime, load_settings, run_service, serve
from fleet.settings import FleetSettings, positive, setting


@dataclasses.dataclass(frozen=True)
class ToySettings:
    interval: float = setting(0.5, "RTBFLEET_TOY_INTERVAL", "seconds between ticks", positive)
    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)


class Toy:
    def __init__(self, settings: ToySettings, runtime: Runtime) -> None:
        self.runtime = runtime
        self.release = asyncio.Event()
        self.events: list[str] = []
        self.ticks = Counter("toy_ticks_total", "ticks", registry=runtime.registry)
        self.fail_start: BaseException | None = None

    async def start(self) -> None:
        self.events.append("start")
        await self.release.wait()
        if self.fail_start is not None:
            raise self.fail_start
        self.ticks.inc(3)

    def ready(self) -> bool:
        return "start" in self.events

    async def stop(self) -> None:
        self.events.append("stop")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


async def _poll(port: int, path: str, status: int) -> str:
    for _ in range(200):
        got, body = await asyncio.to_thread(_get, port, path)
        if got == status:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never answered {status}")


async def _serving(
    toy_box: list[Toy], **kwargs: object
) -> tuple[asyncio.Task[None], asyncio.Future[int]]:
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def build(settings: ToySettings, runtime: Runtime) -> Toy:
        toy_box.append(Toy(settings, runtime))
        return toy_box[-1]

    task = asyncio.create_task(
        serve(
            "toy",
            ToySettings(),
            build,
            health=lambda s: ("127.0.0.1", 0),
            on_listening=port.set_result,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return task, port


async def test_ready_after_start_metrics_served_and_sigterm_stops_cleanly() -> None:
    toys: list[Toy] = []
    task, port_future = await _serving(toys)
    port = await asyncio.wait_for(port_future, 10)
    assert await _poll(port, "/healthz", 200) == "ok\n"
    # Start-up is still under way: alive, not ready.
    assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 503
    toys[0].release.set()
    assert await _poll(port, "/readyz", 200) == "ready\n"
    metrics = await _poll(port, "/metrics", 200)
    assert "toy_ticks_total 3.0" in metrics
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    assert toys[0].events == ["start", "stop"]
    with pytest.raises(OSError):
        _get(port, "/healthz")  # the endpoint is closed


async def test_a_failed_start_still_stops_and_the_error_propagates() -> None:
    toys: list[Toy] = []
    task, port_future = await _serving(toys)
    await asyncio.wait_for(port_future, 10)
    toys[0].fail_start = FleetError("no database")
    toys[0].release.set()
    with pytest.raises(FleetError, match="no database"):
        await asyncio.wait_for(task, 10)
    assert toys[0].events == ["start", "stop"]


async def test_a_main_loop_that_dies_stops_the_service_with_its_error() -> None:
    toys: list[Toy] = []
    task, port_future = await _serving(toys)
    await asyncio.wait_for(port_future, 10)
    toys[0].release.set()
    await asyncio.sleep(0)

    async def loop_that_breaks() -> None:
        raise FleetError("lost the lead and could not reconnect")

    toys[0].runtime.watch(asyncio.create_task(loop_that_breaks(), name="toy-loop"))
    with pytest.raises(FleetError, match="lost the lead"):
        await asyncio.wait_for(task, 10)
    assert toys[0].events[-1] == "stop"


def test_settings_are_loaded_with_the_fleet_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTBFLEET_TOY_INTERVAL", "2")
    monkeypatch.setenv("RTBFLEET_CLOCK_SCALE", "60")
    settings = load_settings(ToySettings)
    assert settings.interval == 2.0
    assert settings.fleet.clock().scale == 60.0


def test_a_bad_setting_is_one_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTBFLEET_TOY_INTERVAL", "-1")
    monkeypatch.chdir(os.path.dirname(__file__))  # no .env here

    def never(settings: ToySettings, runtime: Runtime) -> Toy:
        raise AssertionError("built despite a bad setting")

    assert run_service("toy", ToySettings, never) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("toy: bad configuration: RTBFLEET_TOY_INTERVAL: -1.0")


def test_importing_the_skeleton_leaves_prometheus_unimported() -> None:
    """A pre-forking service (the bidder's supervisor) chooses prometheus_client's
    multiprocess mode before its first import: the skeleton must not import it early."""
    import subprocess
    import sys

    code = "import sys, fleet.service, bidder.__main__; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
