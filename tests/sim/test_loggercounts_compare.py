"""The report's comparison of the bid loggers' aggregates with the simulator's own counts."""

from __future__ import annotations

from sim.loggercounts import LoggerCounts, compare, counts_from_rows

CAMPAIGNS = [
    {"id": 1, "bids": 10, "billed": 4, "clicks": 1, "spend_micros": 9_000},
    {"id": 2, "bids": 5, "billed": 2, "clicks": 0, "spend_micros": 4_000},
]


def rows(**overrides: tuple[int, int]) -> LoggerCounts:
    base = {
        "1.bid": (10, 0),
        "1.impression": (4, 0),
        "1.click": (1, 0),
        "1.billing": (4, 9_000),
        "2.bid": (5, 0),
        "2.impression": (2, 0),
        "2.billing": (2, 4_000),
    }
    base.update({k.replace("_", "."): v for k, v in overrides.items()})
    return counts_from_rows(
        {
            "campaign_id": int(key.split(".")[0]),
            "event_type": key.split(".")[1],
            "events": e,
            "spend_micros": s,
            "estimated": False,
        }
        for key, (e, s) in base.items()
    )


def test_equal_counts_pass_and_say_so() -> None:
    out = compare(CAMPAIGNS, rows(), requests_given_up=0)
    assert out.problems == []
    assert [line.split(" equal")[0] for line in out.lines[:3]] == [
        "bid loggers: impressions",
        "bid loggers: clicks",
        "bid loggers: spend",
    ]


def test_a_micro_of_spend_apart_is_a_problem() -> None:
    out = compare(CAMPAIGNS, rows(**{"2_billing": (2, 4_001)}), requests_given_up=0)
    assert len(out.problems) == 1 and "spend" in out.problems[0] and "campaign 2" in out.problems[0]


def test_missing_tracker_events_are_not_compared_rather_than_passed() -> None:
    only_bids = counts_from_rows(
        r
        for r in (
            {
                "campaign_id": 1,
                "event_type": "bid",
                "events": 10,
                "spend_micros": 0,
                "estimated": False,
            },
        )
    )
    out = compare(CAMPAIGNS[:1], only_bids, requests_given_up=0)
    assert out.problems == []
    assert sum("not compared" in line for line in out.lines) == 3


def test_bids_may_exceed_by_the_requests_given_up_only() -> None:
    assert compare(CAMPAIGNS, rows(**{"1_bid": (12, 0)}), requests_given_up=2).problems == []
    assert compare(CAMPAIGNS, rows(**{"1_bid": (13, 0)}), requests_given_up=2).problems
    assert compare(CAMPAIGNS, rows(**{"1_bid": (9, 0)}), requests_given_up=2).problems


def test_estimates_are_never_compared_and_a_baseline_is_taken_away() -> None:
    sampled = LoggerCounts(rows().figures, estimated=True)
    out = compare(CAMPAIGNS, sampled, requests_given_up=0)
    assert out.problems == [] and "estimates" in out.lines[0]
    earlier = rows()
    doubled = counts_from_rows(
        {"campaign_id": c, "event_type": t, "events": 2 * e, "spend_micros": 2 * s,
         "estimated": False}
        for c, by_type in earlier.figures.items()
        for t, (e, s) in by_type.items()
    )  # fmt: skip
    assert doubled.minus(earlier) == earlier
