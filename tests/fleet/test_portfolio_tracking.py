"""What the tracker reads from a portfolio: click-through URLs, attribution windows, goal events."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.errors import ConfigValidationError
from fleet.portfolio import to_document, validate


def _doc(creative: dict[str, Any] | None = None, **campaign: Any) -> dict[str, Any]:
    cr = {
        "id": 1,
        "format": "banner",
        "size": "300x250",
        "markup": "<a href='${CLICK_URL}'>x</a>",
        "adomain": ["a.example"],
        "click_url": "https://a.example/landing?id=${CLICK_ID}",
        **(creative or {}),
    }
    base = {
        "id": 1,
        "advertiser_id": 1,
        "name": "c",
        "goal_type": "CPA",
        "goal_price": "2",
        "max_bid_cpm": "6",
        "daily_budget": "100",
        "total_budget": "1000",
        "creatives": [cr],
        **campaign,
    }
    return {"advertisers": [{"id": 1, "name": "A", "domain": "a.example"}], "campaigns": [base]}


def test_click_urls_windows_and_goal_events_are_read_and_round_trip() -> None:
    doc = _doc(
        {"click_url": "https://mmp.example/t?c=${CAMPAIGN_ID}&id=${CLICK_ID}"},
        attribution_window_seconds=86400,
        goal_event="registration",
    )
    portfolio = validate(doc)
    campaign = portfolio.campaigns[0]
    assert campaign.creatives[0].click_url.startswith("https://mmp.example/t?")
    assert (campaign.attribution_window_seconds, campaign.goal_event) == (86400, "registration")
    assert validate(to_document(portfolio)) == portfolio


def _without_click_url(doc: dict[str, Any]) -> dict[str, Any]:
    del doc["campaigns"][0]["creatives"][0]["click_url"]
    return doc


def test_defaults_seven_days_and_installs() -> None:
    campaign = validate(_doc()).campaigns[0]
    assert (campaign.attribution_window_seconds, campaign.goal_event) == (7 * 86400, "")


def test_a_creative_that_can_be_clicked_needs_its_click_url() -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate(_without_click_url(_doc()))  # its markup takes ${CLICK_URL}: no click_url
    [(location, message)] = info.value.problems
    assert location == "campaigns[0].creatives[0].click_url"
    assert "required" in message and "${CLICK_URL}" in message
    video = {
        "format": "video",
        "size": "640x360",
        "mimes": ["video/mp4"],
        "markup": "<VAST><ClickThrough><![CDATA[${CLICK_URL}]]></ClickThrough></VAST>",
    }
    with pytest.raises(ConfigValidationError):
        validate(_without_click_url(_doc(video)))
    # a creative nobody can click through us (no ${CLICK_URL} in its markup) needs none
    pixel_only = validate(_without_click_url(_doc({"markup": "<img src='${IMP_URL}'>"})))
    assert pixel_only.campaigns[0].creatives[0].click_url == ""
    assert "click_url" not in to_document(pixel_only)["campaigns"][0]["creatives"][0]


@pytest.mark.parametrize(
    ("click_url", "message"),
    [
        ("https://x.example/?d=${IFA}", "unknown macro"),
        ("javascript:alert(1)", "absolute http(s) URL"),
        ("https://x.example/a b", "spaces"),
        ("", "non-empty string"),
    ],
)
def test_bad_click_urls_are_located(click_url: str, message: str) -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate(_doc({"click_url": click_url}))
    assert [loc for loc, _ in info.value.problems] == ["campaigns[0].creatives[0].click_url"]
    assert message in info.value.problems[0][1]


def test_a_window_must_be_positive_and_rule_pauses_are_not_document_fields() -> None:
    with pytest.raises(ConfigValidationError) as info:
        validate(_doc(attribution_window_seconds=0, paused_by="me"))
    locations = sorted(loc for loc, _ in info.value.problems)
    assert locations == ["campaigns[0].attribution_window_seconds", "campaigns[0].paused_by"]
