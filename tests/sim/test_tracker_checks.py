"""The demo report's tracker lines are checks that can fail: notices, frequency, tracked spend,
attribution (and the cost per activation table beside them)."""

from __future__ import annotations

import collections
from typing import Any

from sim import frequency_check, trackercounts
from sim.ledger import NoticeCounts
from sim.report import CampaignPlan, notice_problems

DAY = 86_400


def _notices(**kinds: NoticeCounts) -> dict[str, Any]:
    return {
        kind: {
            "due": c.due,
            "statuses": {str(k): v for k, v in c.statuses.items()},
            "unanswered": dict(c.unanswered),
        }
        for kind, c in kinds.items()
    }


def test_every_due_notice_answered_with_a_success() -> None:
    ok = NoticeCounts(due=3, answered=3, statuses=collections.Counter({204: 2, 302: 1}))
    assert notice_problems(_notices(billing=ok)) == []
    lost = NoticeCounts(due=3, answered=2, statuses=collections.Counter({204: 2}))
    lost.unanswered["timeout"] += 1
    refused = NoticeCounts(due=2, answered=2, statuses=collections.Counter({204: 1, 403: 1}))
    problems = notice_problems(_notices(billing=lost, click=refused))
    assert problems == [
        "notices: billing: 1 of 3 due unanswered (timeout 1)",
        "notices: click: 1 refused (HTTP 403: 1)",
    ]


def test_cap_windows_open_at_the_first_impression() -> None:
    assert frequency_check.most_in_a_window([], DAY) == 0
    # three within a day of the first; the fourth opens a new window
    assert frequency_check.most_in_a_window([0, 10, DAY - 1, DAY, DAY + 5], DAY) == 3
    assert frequency_check.most_in_a_window([DAY + 5, 0, DAY, 10], DAY) == 2  # any order
    assert frequency_check.most_in_a_window([0, 1, 2, 3], 2) == 2


def _plan(cid: int, caps: tuple[tuple[int, int], ...] = (), **kw: Any) -> CampaignPlan:
    return CampaignPlan(cid, f"c{cid}", kw.pop("goal", "CPI"), 2_000_000, 10**9, "USD",
                        frequency_caps=caps, **kw)  # fmt: skip


def test_a_user_over_a_cap_fails_the_check() -> None:
    plans = [_plan(1, ((2, DAY),)), _plan(2)]
    shown = {
        (7, 1): [0.0, 100.0],  # at the cap
        (8, 1): [0.0, DAY + 1.0, DAY + 2.0],  # two windows, two at most in each
        (9, 2): [0.0] * 10,  # no cap
    }
    found = frequency_check.figures(shown, plans)
    assert found["campaigns"] == [
        {"id": 1, "caps": [[2, DAY]], "users": 2, "impressions": 5, "most": 2,
         "over_cap_users": 0}
    ]  # fmt: skip
    assert frequency_check.problems(found) == []
    assert "OK, no user over a cap" in frequency_check.line(found)
    shown[(7, 1)].append(200.0)
    found = frequency_check.figures(shown, plans)
    (problem,) = frequency_check.problems(found)
    assert "campaign 1 shown to 1 user(s) more often than its cap (2 per 86400 s)" in problem
    assert "saw it 3 times" in problem and "FAILED" in frequency_check.line(found)
    assert "nothing to check" in frequency_check.line(frequency_check.figures(shown, [_plan(2)]))


def _campaign(cid: int, spend: int, installs: int) -> dict[str, Any]:
    return {"id": cid, "spend_usd_micros": spend, "spend_micros": spend, "installs": installs}


def test_tracked_spend_must_equal_the_billing_to_the_micro() -> None:
    plans = [_plan(1), _plan(2, goal="CPA", goal_event="purchase"), _plan(3, goal="CPM")]
    campaigns = [_campaign(1, 5_000_001, 2), _campaign(2, 3_000_000, 1), _campaign(3, 7, 0)]
    books = trackercounts.Books(
        spend={1: 5_000_001, 2: 3_000_000, 3: 7},
        installs={1: 2, 2: 1},
        events={2: {"purchase": 1, "open": 4}},
    )
    found, problems = trackercounts.compare(campaigns, plans, books)
    assert problems == []
    assert found["spend"]["equal"] and found["attribution"]["equal"]
    cpa = {r["id"]: r for r in found["cost_per_activation"]}
    assert (cpa[1]["activations"], cpa[1]["cpa_micros"], cpa[1]["target_micros"]) == (
        2,
        2_500_000,
        2_000_000,
    )
    assert (cpa[2]["activation"], cpa[2]["activations"]) == ("purchase", 1)  # the goal event
    assert cpa[3]["cpa_micros"] is None and cpa[3]["target_micros"] is None
    one_micro_off = trackercounts.Books(spend={1: 5_000_000, 2: 3_000_000, 3: 7},
                                        installs={1: 2, 2: 1})  # fmt: skip
    _, problems = trackercounts.compare(campaigns, plans, one_micro_off)
    assert (
        len(problems) == 1
        and "campaign 1: exchange billed 5000001, tracker 5000000" in (problems[0])
    )
    # spend the tracker counted for a campaign the report does not know is a difference too
    extra = trackercounts.Books(spend={1: 5_000_001, 2: 3_000_000, 3: 7, 9: 1},
                                installs={1: 2, 2: 1})  # fmt: skip
    _, problems = trackercounts.compare(campaigns, plans, extra)
    assert len(problems) == 1 and "tracker 8000009" in problems[0]


def test_attributed_installs_must_equal_the_simulator_s() -> None:
    plans = [_plan(1)]
    books = trackercounts.Books(spend={1: 10}, installs={1: 1}, organic_installs=1)
    found, problems = trackercounts.compare([_campaign(1, 10, 2)], plans, books)
    assert not found["attribution"]["equal"]
    (problem,) = problems
    assert "campaign 1: 2 installs after our clicks, 1 attributed" in problem
    assert "1 of this run's installs taken as organic" in problem


def test_spend_since_the_run_began() -> None:
    before = trackercounts.Spend({1: 100, 2: 50})
    after = trackercounts.Spend({1: 130, 2: 50, 3: 7})
    assert after.minus(before) == {1: 30, 3: 7}


def test_the_demo_caps_its_broadest_campaign_and_every_creative_has_a_click_url() -> None:
    from fleet.portfolio import validate
    from sim.demo import cap_the_broadest
    from sim.portfolio import generate

    document = generate(20, seed=1)
    cap_the_broadest(document)
    broad = [c for c in document["campaigns"] if not c.get("targeting")]
    assert broad and broad[0]["frequency_caps"] == [{"max_impressions": 2, "period_seconds": DAY}]
    campaigns = validate(document).campaigns  # every clickable creative has its click URL
    assert all(cr.click_url for c in campaigns for cr in c.creatives)
    assert any(c.frequency_caps for c in campaigns if c.id == broad[0]["id"])
