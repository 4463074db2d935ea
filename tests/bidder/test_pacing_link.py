"""The bidder's pacing link over the real pacing gate and the real recorded-spend floor."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from bidder.outcome import Answer
from bidder.pacing_link import PacingLink, count_opportunities, gate_settings
from bidder.sources import BudgetGate
from fleet.config import Campaign
from fleet.events import AnyEvent, AuctionEvent, BidEvent, BillingEvent, LossEvent, WinEvent
from pacing.gate import CampaignPacing, HolderLeases, PacingState

HOLDER = "bidder-0"
NOW = 1_780_000_000.0  # fleet seconds
DAY = datetime.fromtimestamp(NOW, UTC).date().toordinal()
PRICE = 2_000_000  # CPM micros: one impression costs at most 2_000 micros


def campaign(cid: int = 1, daily: int = 100_000_000, total: int = 0) -> Campaign:
    return Campaign(
        id=cid,
        advertiser_id=1,
        name=f"c{cid}",
        goal_type="CPM",
        goal_price_micros=1_000_000,
        max_bid_cpm_micros=10_000_000,
        daily_budget_micros=daily,
        total_budget_micros=total,
    )


class Clock:
    now = 10.0

    def __call__(self) -> float:
        return self.now


def floor(*campaigns: Campaign, spent: int = 0) -> BudgetGate:
    gate = BudgetGate(max_age=30.0, clock=Clock())
    by_day = {(c.id, datetime.fromtimestamp(NOW, UTC).date()): spent for c in campaigns}
    gate.update(campaigns, by_day, {}, datetime.fromtimestamp(NOW, UTC), loaded_at=10.0)
    return gate


def state(cid: int = 1, budget: int = 100_000_000, throttle: float = 1.0) -> PacingState:
    pacing = CampaignPacing(
        campaign_id=cid,
        day=DAY,
        day_end=NOW + 3600,
        budget=budget,
        committed=0,
        committed_at=NOW,
        planned=0,
        throttle=throttle,
    )
    return PacingState(issued_at=NOW, campaigns={cid: pacing})


def leases(grant: int, expires_at: float, cid: int = 1, exposure: int = 10_000) -> HolderLeases:
    return HolderLeases(
        holder=HOLDER,
        issued_at=NOW,
        campaign_ids=[cid],
        days=[DAY],
        grants=[grant],
        exposures=[exposure],
        expires_at=[expires_at],
    )


def bid_event(txid: str, cid: int = 1, p_win: float = 0.5) -> BidEvent:
    return BidEvent(
        txid=txid,
        ts=NOW,
        imp_id="1",
        campaign_id=cid,
        creative_id=1,
        bid_cpm_micros=PRICE,
        floor_cpm_micros=0,
        value_cpm_micros=PRICE,
        p_click=0.0,
        p_install=0.0,
        auction_type=1,
        p_win=p_win,
        campaign_bid_cpm_micros=PRICE,
    )


def answer(*events: AnyEvent, opportunities: Sequence[list[int]] = ()) -> Answer:
    """An answer as it went out: its events and each imp's candidate campaign ids."""
    return Answer(
        status=200 if any(isinstance(e, BidEvent) for e in events) else 204,
        body=b"",
        outcome="bid" if any(isinstance(e, BidEvent) for e in events) else "nobid",
        nbr=None,
        reason="",
        events=list(events),
        opportunities=[np.asarray(ids, dtype=np.int64) for ids in opportunities],
    )


def link(c: Campaign, **kw: object) -> PacingLink:
    return PacingLink(HOLDER, floor(c, **kw), rng=random.Random(1))  # type: ignore[arg-type]


def test_unbudgeted_campaigns_bypass_the_gate_and_budgeted_ones_fail_closed() -> None:
    free, paid = campaign(1, daily=0), campaign(2)
    lk = PacingLink(HOLDER, floor(free, paid), rng=random.Random(1))
    assert lk.allow(free, PRICE, NOW)
    assert not lk.allow(paid, PRICE, NOW)  # no pacing state yet
    assert lk.refused == {"unpaced": 1}


def test_spends_its_allowance_then_stops_until_the_next_grant() -> None:
    c = campaign()
    lk = link(c)
    lk.gate.install(state(), leases(grant=5_000, expires_at=NOW + 15))
    sent = 0
    for i in range(10):
        if lk.allow(c, PRICE, NOW, 0.5):
            sent += lk.sent(answer(bid_event(f"r{i}:1:{HOLDER}", p_win=0.5)), NOW)
    # each bid is checked and reserved at 1_000 (2_000 x 0.5): five fit in 5_000
    assert sent == 5
    assert not lk.allow(c, PRICE, NOW, 0.5)
    assert lk.refused["allowance"] >= 1
    lk.gate.install(None, leases(grant=9_000, expires_at=NOW + 30))
    assert lk.allow(c, PRICE, NOW + 1, 0.5)


def test_an_allowance_holds_bids_at_their_expected_cost_not_the_worst_case() -> None:
    """A bid that wins one time in five takes a fifth of a worst-case impression from the
    allowance: the same grant carries five times the bids it would at P(win) = 1."""
    counts = {}
    for p_win in (1.0, 0.2):
        c = campaign()
        lk = link(c)
        lk.gate.install(state(), leases(grant=20_000, expires_at=NOW + 15, exposure=100_000))
        sent = 0
        for i in range(100):
            if lk.allow(c, PRICE, NOW, p_win):
                sent += lk.sent(answer(bid_event(f"r{i}:1:{HOLDER}", p_win=p_win)), NOW)
        counts[p_win] = sent
        assert lk.gate.ledger.used(1, DAY) <= 20_000
    assert counts == {1.0: 10, 0.2: 50}


def test_the_exposure_cap_bounds_what_a_low_p_win_may_risk() -> None:
    """A model that says P(win) = 0.01 cannot run up worst-case spend past the cap: each
    unresolved bid's excess (2_000 - 20) counts against it."""
    c = campaign()
    lk = link(c)
    lk.gate.install(state(), leases(grant=10_000_000, expires_at=NOW + 15, exposure=10_000))
    sent = 0
    for i in range(100):
        if lk.allow(c, PRICE, NOW, 0.01):
            sent += lk.sent(answer(bid_event(f"r{i}:1:{HOLDER}", p_win=0.01)), NOW)
    assert sent == 5  # 5 x 1_980 <= 10_000 < 6 x 1_980
    assert lk.refused == {"exposure": 95}


def test_stops_when_its_lease_expires_dead_man_switch() -> None:
    c = campaign()
    lk = link(c)
    lk.gate.install(state(), leases(grant=10_000_000, expires_at=NOW + 15))
    assert lk.allow(c, PRICE, NOW + 14.9)
    assert not lk.allow(c, PRICE, NOW + 15)
    assert lk.refused == {"expired": 1}


def test_the_recorded_spend_floor_stays_beneath() -> None:
    c = campaign(daily=1_000_000)
    lk = link(c, spent=1_000_000)
    lk.gate.install(state(budget=1_000_000), leases(grant=10_000_000, expires_at=NOW + 15))
    assert not lk.allow(c, PRICE, NOW)
    assert lk.refused == {}  # refused by the floor before the pacing gate was asked


def test_follows_only_its_own_transactions() -> None:
    c = campaign()
    lk = link(c)
    lk.gate.install(state(), leases(grant=10_000_000, expires_at=NOW + 15))
    mine, other = f"r1:1:{HOLDER}", "r1:1:bidder-1"
    assert lk.sent(answer(bid_event(mine), bid_event("r2:1:" + HOLDER)), NOW) == 2
    assert lk.gate.ledger.pending(1) == 2_000
    win = WinEvent(
        txid=mine,
        ts=NOW,
        campaign_id=1,
        creative_id=1,
        bid_cpm_micros=PRICE,
        clear_cpm_micros=1_500_000,
    )
    assert not lk.follow(msgspec_replace(win, other), NOW)
    assert lk.follow(win, NOW)
    assert lk.follow(
        LossEvent(
            txid="r2:1:" + HOLDER, ts=NOW, campaign_id=1, creative_id=1, bid_cpm_micros=PRICE
        ),
        NOW,
    )
    assert lk.gate.ledger.pending(1) == 1_500  # the win at its clearing cost; the loss freed
    bill = BillingEvent(
        txid=mine,
        ts=NOW,
        campaign_id=1,
        creative_id=1,
        clear_cpm_micros=1_500_000,
        cost_micros=1_500,
    )
    assert lk.follow(bill, NOW)
    assert lk.followed == 3


def test_a_late_answer_reserves_nothing_and_opportunities_are_counted() -> None:
    c = campaign()
    lk = link(c)
    lk.gate.install(state(), leases(grant=10_000_000, expires_at=NOW + 15))
    auction = AuctionEvent(
        txid=f"r1:1:{HOLDER}", ts=NOW, bidder_id=HOLDER, exchange="x", imps=4, outcome="late"
    )
    late = answer(auction, opportunities=[[1, 7], [1], [], [1]])
    assert lk.sent(late, NOW) == 0
    assert lk.gate.ledger.pending(1) == 0
    report = lk.gate.report(NOW)
    assert report.opportunities == {1: 3, 7: 1}
    assert lk.gate.report(NOW).opportunities == {}  # counted once


def test_count_opportunities_and_scaled_lifetimes() -> None:
    class Entry:
        def __init__(self, cid: int) -> None:
            self.campaign = campaign(cid)

    class Cand:
        def __init__(self, cid: int) -> None:
            self.entry = Entry(cid)

    into: dict[int, int] = {}
    count_opportunities(into, [Cand(1), Cand(2), Cand(1)])
    assert into == {1: 2, 2: 1}
    s = gate_settings(576.0)
    assert s.max_state_age == 30.0 * 576 and s.ledger.win_ttl == 60.0 * 576


def msgspec_replace(event: WinEvent, txid: str) -> WinEvent:
    import msgspec

    return msgspec.structs.replace(event, txid=txid)
