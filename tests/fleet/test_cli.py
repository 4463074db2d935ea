"""The command line as a user meets it: one-line errors, and documentation that stays current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import main, settings_table

REPO = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_every_variable_as_the_code_does() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    for service, variable, default, help_text in settings_table():
        row = f"| {service} | `{variable}` | `{default}` | {help_text} |"
        assert row in doc, f"docs/configuration.md is stale; regenerate it: {row}"


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
