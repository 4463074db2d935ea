"""The portfolio file reread: unchanged campaigns keep the last read's objects, the snapshot
equals a fresh read's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bidder.sources import PortfolioFile, load_portfolio_file
from fleet.errors import ConfigValidationError
from sim import portfolio as synthetic

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


def _document() -> Any:
    return synthetic.generate(20, seed=5, creatives_per_campaign=2, now=NOW)


def test_unchanged_campaigns_are_the_last_reads_objects(tmp_path: Path) -> None:
    doc = _document()
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps(doc))
    reader = PortfolioFile(path)
    first = reader.read()
    assert first == load_portfolio_file(path)
    assert reader.reused == 0
    changed_id = doc["campaigns"][7]["id"]
    doc["campaigns"][7]["max_bid_cpm"] = "99.99"
    del doc["campaigns"][3]  # and one removed
    path.write_text(json.dumps(doc))
    second = reader.read()
    assert second == load_portfolio_file(path)  # the same snapshot as a fresh read
    assert reader.reused == 18
    before = {c.id: c for c in first.campaigns}
    for c in second.campaigns:
        if c.id == changed_id:
            assert c is not before[c.id] and c != before[c.id]
        else:
            assert c is before[c.id]
    path.write_text(json.dumps(doc, indent=1))  # the same campaigns in other text: read anew
    third = reader.read()
    assert third == second and reader.reused == 0


def test_yaml_read_whole_and_errors_located(tmp_path: Path) -> None:
    doc = _document()
    path = tmp_path / "portfolio.yaml"
    path.write_text(yaml.safe_dump(doc))
    reader = PortfolioFile(path)
    assert reader.read() == reader.read() == load_portfolio_file(path)
    assert reader.reused == 0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc)[:-40])
    with pytest.raises(ConfigValidationError) as caught:
        PortfolioFile(broken).read()
    assert "broken.json:1:" in str(caught.value)
