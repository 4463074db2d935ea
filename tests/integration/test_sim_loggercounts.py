"""The demo report's bid-logger lines against real loggers, a real proxy and Postgres: events a
bidder and a tracker publish on the bus come back from the aggregates equal to the simulator's
counts of the same transactions, and a count that differs is reported as a problem."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from bidlogger_world import world
from conftest_bidlogger import (
    forget_earlier_garbage,
    logger_settings,
    publish,
    running_proxy,
    split,
    temporary_root,
    until_counted,
    until_heard,
)
from test_bus_proxy import Proxy

from bidlogger import BidLogger
from fleet.bus import Publisher
from fleet.events import AnyEvent, BidEvent, BillingEvent, ClickEvent, ImpressionEvent
from sim import loggercounts

pytestmark = pytest.mark.integration

START = 1_796_100_000.0 // 60 * 60


@pytest.fixture(autouse=True)
def _earlier_garbage() -> None:
    forget_earlier_garbage()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async with running_proxy() as running:
        yield running


@pytest.fixture
def state_root() -> Iterator[Path]:
    with temporary_root() as root:
        yield root


def simulator_campaigns(events: list[AnyEvent]) -> list[dict[str, Any]]:
    """The report's campaign entries as the simulator would count these transactions."""
    bids: Counter[int] = Counter()
    billed: Counter[int] = Counter()
    clicks: Counter[int] = Counter()
    spend: Counter[int] = Counter()
    for e in events:
        if isinstance(e, BidEvent):
            bids[e.campaign_id] += 1
        elif isinstance(e, ImpressionEvent):
            billed[e.campaign_id] += 1
        elif isinstance(e, ClickEvent):
            clicks[e.campaign_id] += 1
        elif isinstance(e, BillingEvent):
            spend[e.campaign_id] += e.cost_micros
    return [
        {
            "id": c,
            "bids": bids[c],
            "billed": billed[c],
            "clicks": clicks[c],
            "spend_micros": spend[c],
        }
        for c in sorted(set(bids) | set(billed))
    ]


async def test_report_counts_come_from_the_aggregates_and_a_difference_fails(
    proxy: Proxy, state_root: Path, pg_dsn: str
) -> None:
    loggers = [
        BidLogger(logger_settings(proxy, state_root, partitions=spec), pg_dsn)
        for spec in ("0-31", "32-63")
    ]
    for lg in loggers:
        await lg.start()
    bidder = Publisher(proxy.inside, publisher_id="bidder-r", batch_delay=0.005)
    tracker = Publisher(proxy.inside, publisher_id="tracker-r", batch_delay=0.005)
    await bidder.start()
    await tracker.start()
    try:
        await until_heard(bidder, loggers)
        for lg in loggers:
            await lg.flush()
            assert await lg.wait_written(20)
        before = await loggercounts.baseline(pg_dsn)
        assert before is not None
        txs = world(800, seed=11, start=START, bidder="bidder-r")
        bids, later = split(txs)
        await publish(bidder, bids)
        await until_counted(loggers, len(bids))
        for lg in loggers:
            await lg.flush()
            assert await lg.wait_written(20)
        # the bidder's events alone: impressions, clicks and spend are said not compared
        only_bids = await loggercounts.read_counts(pg_dsn, settle=0.3)
        campaigns = simulator_campaigns([e for tx in txs for e in tx])
        partial = loggercounts.compare(campaigns, only_bids.minus(before), requests_given_up=0)
        assert partial.problems == []
        assert sum("not compared" in line for line in partial.lines) == 3, partial.lines

        await publish(tracker, later)
        await until_counted(loggers, len(bids) + len(later))
        for lg in loggers:
            await lg.flush()
            assert await lg.wait_written(20)
        figures: dict[str, Any] = {
            "requests": {"timeouts": 0, "transport_errors": 0},
            "campaigns": campaigns,
        }
        problems = await loggercounts.attach(figures, pg_dsn, before)
        assert problems == []
        lines = figures[loggercounts.FIGURE]["lines"]
        for label in ("impressions", "clicks", "spend"):
            assert any(line.startswith(f"bid loggers: {label} equal") for line in lines), lines
        assert loggercounts.logger_summary(figures)[0].startswith("Loggers   impressions equal")

        # one click the loggers never saw: the check fails and names the campaign
        wrong = copy.deepcopy(figures)
        target = next(c for c in wrong["campaigns"] if c["clicks"])
        target["clicks"] += 1
        problems = await loggercounts.attach(wrong, pg_dsn, before)
        assert len(problems) == 1 and f"campaign {target['id']}" in problems[0], problems
    finally:
        await bidder.close()
        await tracker.close()
        for lg in loggers:
            await lg.close()
