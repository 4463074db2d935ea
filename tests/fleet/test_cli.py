"""The command line as a user meets it: one-line errors, and documentation that stays current."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.cli import main, settings_table

REPO = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_the_registry_s_table() -> None:
    """docs/configuration.md holds exactly the rows `rtbfleet settings --markdown` prints: every
    variable of the kernel, of every registered service and command, and nothing stale."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "`" in line]
    expected = [
        f"| {owner} | `{variable}` | `{default}` | {help_text} |"
        for owner, variable, default, help_text in settings_table()
    ]
    assert rows == expected, (
        "docs/configuration.md is stale; regenerate its table with `rtbfleet settings --markdown`"
    )
    owners = {owner for owner, *_ in settings_table()}
    assert {"fleet", "bidder", "cache-watcher", "sim"} <= owners


def test_bad_setting_stops_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTBFLEET_EVENT_PARTITIONS", "lots")
    assert main(["settings"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "RTBFLEET_EVENT_PARTITIONS" in err and "'lots'" in err


def test_missing_campaign_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["campaigns", "load", str(tmp_path / "nope.yaml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(str(tmp_path / "nope.yaml"))
    assert lines[-1] == "rtbfleet: 1 error(s); nothing was written"


def test_unknown_service_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "run", "frobnicator"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown service 'frobnicator'" in result.stderr


@pytest.mark.parametrize(
    "words",
    [
        ["cache-watcher", "--help"],  # a registered service: its own args come first
        ["cache", "watcher", "--help"],  # its package, as deploy/k8s runs it
    ],
)
def test_run_execs_the_registered_service(words: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "run", *words],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m cache watcher")
    assert "--metrics-port" in result.stdout


@pytest.fixture
def root_logging() -> Iterator[None]:
    """`rtbfleet up` configures logging at INFO on this test's captured stderr: undo it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_processes_option_is_checked_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTBFLEET_DATA_DIR", str(tmp_path))
    assert main(["up", "--processes", "bidder"]) == 1
    assert (
        capsys.readouterr().err
        == "rtbfleet: --processes bidder: expected SERVICE=N (see rtbfleet services)\n"
    )
    assert main(["up", "--processes", "cache-watcher=2"]) == 1
    assert "cache-watcher runs as one process" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was started or written
