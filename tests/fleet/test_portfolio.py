from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.errors import ConfigValidationError
from fleet.portfolio import read_document, to_document, validate
from sim.portfolio import catch_all, generate


def _campaign(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "advertiser_id": 1,
        "name": "c",
        "goal_type": "CPC",
        "goal_price": "0.40",
        "max_bid_cpm": "6",
        "daily_budget": "100",
        "total_budget": "1000",
        "creatives": [
            {
                "id": 1,
                "format": "banner",
                "size": "300x250",
                "markup": "<b>x</b>",
                "adomain": ["a.example"],
            }
        ],
    }
    base.update(overrides)
    return base


def _doc(*campaigns: dict[str, Any]) -> dict[str, Any]:
    return {
        "advertisers": [{"id": 1, "name": "A", "domain": "a.example"}],
        "campaigns": list(campaigns),
    }


def test_valid_document_gives_exact_micros() -> None:
    p = validate(_doc(_campaign()))
    c = p.campaigns[0]
    assert (c.goal_price_micros, c.max_bid_cpm_micros) == (400_000, 6_000_000)
    assert (c.daily_budget_micros, c.total_budget_micros) == (100_000_000, 1_000_000_000)
    assert (c.creatives[0].w, c.creatives[0].h) == (300, 250)


def test_every_error_is_reported_with_its_location() -> None:
    doc = _doc(
        _campaign(goal_type="CPX", daily_budget="5000", timezone="Mars/Olympus"),
        _campaign(id=1, advertiser_id=9, targeting={"countries": ["us"], "hours_of_week": [200]}),
    )
    doc["campaigns"][1]["creatives"][0]["id"] = 2
    with pytest.raises(ConfigValidationError) as info:
        validate(doc)
    problems = dict(info.value.problems)
    assert "CPX" in problems["campaigns[0].goal_type"]
    assert "total_budget" in problems["campaigns[0].daily_budget"]
    assert "Mars/Olympus" in problems["campaigns[0].timezone"]
    assert "alpha-3" in problems["campaigns[1].targeting.countries[0]"]
    assert "0 to 167" in problems["campaigns[1].targeting.hours_of_week[0]"]
    assert "already used by campaigns[0]" in problems["campaigns[1].id"]
    assert "does not exist" in problems["campaigns[1].advertiser_id"]


def test_unknown_fields_and_micro_and_decimal_together_are_errors() -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate(_doc(_campaign(budget=5, goal_price_micros=1)))
    locations = [where for where, _ in info.value.problems]
    assert "campaigns[0].budget" in locations
    assert "campaigns[0].goal_price" in locations


def test_generated_portfolio_is_valid_and_round_trips() -> None:
    document = generate(200, seed=7)
    p = validate(document)
    assert len(p.campaigns) == 200 and p.creative_count == 1000
    assert validate(to_document(p)) == p
    assert (
        generate(200, seed=7, now=None)["campaigns"][5]["targeting"]
        == document["campaigns"][5]["targeting"]
    )
    goals = {c.goal_type for c in p.campaigns}
    assert goals == {"CPM", "CPC", "CPI", "CPA"}


def test_catch_all_is_valid() -> None:
    p = validate(catch_all())
    assert {cr.format for cr in p.campaigns[0].creatives} == {"banner", "video", "native"}


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("campaigns:\n  - id: 1\n   name: [broken\n")
    with pytest.raises(ConfigValidationError) as info:
        read_document(f)
    assert info.value.problems[0][0].startswith(f"{f}:")
