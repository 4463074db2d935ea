"""The in-flight ledger and the gate: reservations, notices, leases, the floor, the throttle."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pacing.gate import (
    CampaignPacing,
    Gate,
    GateSettings,
    HolderLeases,
    Ledger,
    LedgerSettings,
    PacingState,
    expected_cost,
    worst_cost,
)
from pacing.gate.decision import OPPORTUNITY_DENSE_IDS, OPPORTUNITY_IDLE_REPORTS

T0 = 1_765_000_000.0
DAY = 740_000


def state(
    *, budget: int = 1_000_000, committed: int = 0, throttle: float = 1.0, at: float = T0
) -> PacingState:
    cp = CampaignPacing(
        campaign_id=7,
        day=DAY,
        day_end=at + 3600,
        budget=budget,
        committed=committed,
        committed_at=at,
        planned=0,
        throttle=throttle,
    )
    return PacingState(issued_at=at, campaigns={7: cp})


def leases(
    holder: str = "b0",
    *,
    grant: int = 100_000,
    exposure: int = 100_000,
    until: float = T0 + 15,
    at: float = T0,
    day: int = DAY,
) -> HolderLeases:
    return HolderLeases(
        holder=holder,
        issued_at=at,
        campaign_ids=[7],
        days=[day],
        grants=[grant],
        exposures=[exposure],
        expires_at=[until],
    )


def gate(**kw: object) -> Gate:
    g = Gate("b0", GateSettings(ledger=LedgerSettings(win_ttl=60, billing_ttl=900, commit_lag=30)))
    g.install(state(**kw), leases())  # type: ignore[arg-type]
    return g


def test_costs_are_integer_micros_rounded_to_the_safe_side() -> None:
    assert worst_cost(2_500_999) == 2_500
    assert expected_cost(2_500, 0.3) == 750
    assert expected_cost(2_500, 0.30001) == 751  # rounded up
    assert expected_cost(2_500, 0.0) == 1 and expected_cost(0, 0.5) == 0
    assert expected_cost(2_500, 7.0) == 2_500
    assert expected_cost(2_500, float("nan")) == 2_500  # not a probability: the worst case
    assert expected_cost(2_500, -0.5) == 2_500


def test_check_has_no_side_effects_and_reserve_charges_the_expected_cost() -> None:
    g = gate()
    for _ in range(3):
        assert g.check(7, 10_000_000, 0.5, T0 + 1, 0.0) == ""
    assert g.ledger.used(7, DAY) == 0 and g.ledger.pending(7) == 0
    assert g.reserve("tx1", 7, 10_000_000, 0.5, T0 + 1)
    assert g.ledger.used(7, DAY) == 5_000
    assert g.ledger.pending(7) == 5_000
    assert g.ledger.exposure(7) == 5_000
    assert not g.reserve("tx1", 7, 10_000_000, 0.5, T0 + 1)  # the same bid twice: once
    assert g.ledger.used(7, DAY) == 5_000


def test_the_reasons_in_order() -> None:
    g = Gate("b0")
    assert g.check(7, 1_000_000, 0.5, T0, 0.0) == "unpaced"
    g.install(state(budget=1_000, committed=999), leases())
    assert g.check(7, 4_000_000, 0.5, T0, 0.0) == "floor"
    g.install(state(at=T0 + 0.1), None)
    g._leases = {}
    assert g.check(7, 1_000_000, 0.5, T0, 0.0) == "no_lease"
    g.install(None, leases(at=T0 + 0.2, until=T0 + 5))
    assert g.check(7, 1_000_000, 0.5, T0 + 5, 0.0) == "expired"
    g.install(None, leases(at=T0 + 0.3, grant=400))
    assert g.check(7, 1_000_000, 0.5, T0, 0.0) == "allowance"
    g.install(None, leases(at=T0 + 0.4, exposure=400))
    assert g.check(7, 1_000_000, 0.5, T0, 0.0) == "exposure"
    g.install(state(at=T0 + 0.5, throttle=0.25), leases(at=T0 + 0.5))
    assert g.check(7, 1_000_000, 0.5, T0, 0.3) == "throttled"
    assert g.check(7, 1_000_000, 0.5, T0, 0.2) == ""
    assert g.check(7, 1_000_000, 0.5, T0 + 31, 0.2) == "unpaced"  # the state is too old
    g.install(None, leases(at=T0 + 0.6, day=DAY - 1))
    assert g.check(7, 1_000_000, 0.5, T0, 0.0) == "no_lease"  # yesterday's lease


def test_older_state_and_leases_and_someone_elses_are_ignored() -> None:
    g = gate()
    g.install(state(at=T0 - 1, throttle=0.0), leases(at=T0 - 1, grant=0))
    g.install(None, leases("b1", at=T0 + 1, grant=0))
    assert g.check(7, 1_000_000, 0.5, T0, 0.5) == ""


def test_the_allowance_is_spent_by_reservations_and_the_floor_counts_own_pending() -> None:
    g = Gate("b0")
    g.install(state(budget=10_000), leases(grant=3_000, exposure=10**9))
    n = 0
    while g.check(7, 2_000_000, 0.5, T0, 0.0) == "":
        g.reserve(f"t{n}", 7, 2_000_000, 0.5, T0)
        n += 1
    assert n == 3 and g.ledger.used(7, DAY) == 3_000
    g.install(state(budget=10_000, committed=8_000, at=T0 + 1), leases(grant=10**9, at=T0 + 1))
    # committed 8,000 + own pending 3,000 + 1,000 > 10,000
    assert g.check(7, 2_000_000, 0.5, T0 + 1, 0.0) == "floor"


def test_win_replaces_the_reservation_and_a_costlier_win_is_charged() -> None:
    led = Ledger(LedgerSettings(win_ttl=60, billing_ttl=900, commit_lag=30))
    led.reserve("a", 7, DAY, 500, 2_000, T0)
    led.reserve("b", 7, DAY, 500, 2_000, T0)
    led.win("a", 1_800, T0 + 1)
    assert led.pending(7) == 1_800 + 500
    assert led.used(7, DAY) == 500 + 500 + 1_300
    assert led.exposure(7) == 1_500  # only b is unresolved
    led.win("a", 1_800, T0 + 2)  # duplicate
    assert led.counts.duplicates == 1 and led.pending(7) == 2_300
    led.loss("b", T0 + 2)
    assert led.pending(7) == 1_800 and led.exposure(7) == 0
    led.billing("a", 1_700, T0 + 100)  # the billed amount is the truth
    assert led.pending(7) == 1_700
    led.billing("a", 1_700, T0 + 101)
    assert led.counts.duplicates == 2
    led.expire(T0 + 100 + 30)
    assert led.pending(7) == 0 and len(led) == 0
    assert led.used(7, DAY) == 2_300  # used never goes down


def test_bids_without_notices_expire_and_a_late_win_is_counted_again() -> None:
    led = Ledger(LedgerSettings(win_ttl=60, billing_ttl=900, commit_lag=30))
    led.reserve("a", 7, DAY, 500, 2_000, T0)
    assert led.expire(T0 + 59) == 0
    assert led.expire(T0 + 60) == 1
    assert led.pending(7) == 0 and led.exposure(7) == 0
    led.win("a", 2_000, T0 + 120)  # late: it will be billed, so it counts again
    assert led.counts.late_wins == 1 and led.pending(7) == 2_000
    assert led.expire(T0 + 120 + 899) == 0
    assert led.expire(T0 + 120 + 900) == 1  # never billed: released at the billing horizon
    assert led.pending(7) == 0


def test_unknown_notices_change_nothing() -> None:
    led = Ledger()
    led.win("nobody", 1_000, T0)
    led.billing("nobody", 1_000, T0)
    led.loss("nobody", T0)
    assert led.counts.unknown == 3 and led.pending(7) == 0


def test_a_billing_without_a_win_notice_resolves_the_bid() -> None:
    led = Ledger()
    led.reserve("a", 7, DAY, 500, 2_000, T0)
    led.billing("a", 1_900, T0 + 200)
    assert led.pending(7) == 1_900 and led.exposure(7) == 0
    assert led.used(7, DAY) == 500 + 1_400


def test_bad_reservations_are_refused() -> None:
    with pytest.raises(ValueError):
        Ledger().reserve("a", 7, DAY, 600, 500, T0)
    with pytest.raises(ValueError):
        LedgerSettings(win_ttl=0)


def test_report_carries_used_pending_days_opportunities_and_blocked_once() -> None:
    g = gate()
    g.count_opportunities(7, 40)
    g.count_blocked(7, 1_234)
    g.reserve("t", 7, 10_000_000, 0.5, T0)
    rep = g.report(T0 + 1)
    assert rep.used == {7: 5_000} and rep.days == {7: DAY} and rep.pending == {7: 5_000}
    assert rep.opportunities == {7: 40} and rep.blocked == {7: 1_234}
    again = g.report(T0 + 2)
    assert again.opportunities == {} and again.blocked == {} and again.used == {7: 5_000}


@pytest.mark.parametrize("low", [1, -3, OPPORTUNITY_DENSE_IDS - 60, 1 << 40])
def test_opportunity_ids_count_exactly_as_one_at_a_time(low: int) -> None:
    """Arrays of ids (random, repeated across arrays and within one, empty, new ids arriving
    after reports, a portfolio that grows) give the reports the scalar counter gives, with the
    dense index (small ids), without it (negative or large ids) and across its limit."""
    rng = random.Random(11 + low)
    vectorized, scalar = Gate("b0"), Gate("b0")
    universe = 50
    for step in range(400):
        if step % 40 == 39:
            universe += 30  # the portfolio grows: new ids, above and among the old ones
        for _ in range(rng.randint(0, 4)):
            size = rng.choice([0, 0, 1, 5, 30])
            if rng.random() < 0.8:
                ids = rng.sample(range(low, low + universe), size)
            else:
                ids = [rng.randrange(low, low + universe) for _ in range(size)]  # duplicates
            vectorized.count_opportunity_ids(np.asarray(ids, dtype=np.int64))
            for cid in ids:
                scalar.count_opportunities(cid)
            if rng.random() < 0.1:  # both kinds in one report
                vectorized.count_opportunities(low + 3, 2)
                scalar.count_opportunities(low + 3, 2)
        if rng.random() < 0.3:
            got, want = vectorized.report(T0 + step), scalar.report(T0 + step)
            assert got.opportunities == want.opportunities
            assert all(type(k) is int and type(v) is int for k, v in got.opportunities.items())
    assert vectorized.report(T0 + 500).opportunities == scalar.report(T0 + 500).opportunities
    assert (vectorized._opp_index is not None) == (low == 1)


def test_opportunity_ids_not_counted_for_long_are_forgotten() -> None:
    g = gate()
    g.count_opportunity_ids(np.array([5, 2, 9], dtype=np.int64))
    assert g.report(T0).opportunities == {2: 1, 5: 1, 9: 1}
    for i in range(OPPORTUNITY_IDLE_REPORTS):
        g.count_opportunity_ids(np.array([9], dtype=np.int64))
        assert g.report(T0 + i).opportunities == {9: 1}
    assert g._opp_ids.tolist() == [9]  # 2 and 5 idle for OPPORTUNITY_IDLE_REPORTS reports
    g.count_opportunity_ids(np.array([5, 9], dtype=np.int64))  # back again: counted afresh
    g.count_opportunity_ids(np.empty(0, dtype=np.int64))
    assert g.report(T0 + 200).opportunities == {5: 1, 9: 1}


def test_lease_columns_must_line_up() -> None:
    with pytest.raises(ValueError):
        HolderLeases(
            holder="b",
            issued_at=0.0,
            campaign_ids=[1],
            days=[],
            grants=[1],
            exposures=[1],
            expires_at=[1.0],
        )
    hl = leases()
    lease = hl.lease(7)
    assert lease is not None and lease.grant == 100_000
    assert hl.lease(8) is None


def test_a_newer_read_of_committed_spend_settles_the_billings_it_holds() -> None:
    """A billing stays pending until a pacing state whose read of committed spend began after
    it (less the clock skew) arrives; then committed spend holds it and pending lets go. A
    billing after the read, and one within the skew, stay counted; commit_lag is the backstop."""
    g = gate()
    g.install(state(), leases())
    for i, at in enumerate((T0 + 1, T0 + 9.8, T0 + 12)):
        g.reserve(f"t{i}", 7, 2_000_000, 0.5, T0)
        g.billing(f"t{i}", 1_500, at)
    assert g.ledger.pending(7) == 4_500
    g.install(
        PacingState(issued_at=T0 + 13, campaigns=state(at=T0 + 10).campaigns, clock_skew=0.5),
        None,
    )
    assert g.ledger.pending(7) == 3_000  # billed at T0 + 1: settled; after T0 + 9.5: not
    g.install(PacingState(issued_at=T0 + 13, campaigns=state(at=T0 + 30).campaigns), None)
    assert g.ledger.pending(7) == 3_000  # not a newer state: nothing settled
    g.install(PacingState(issued_at=T0 + 14, campaigns=state(at=T0 + 12).campaigns), None)
    assert g.ledger.pending(7) == 1_500
    g.billing("t0", 1_500, T0 + 14)  # a duplicate notice changes nothing
    assert g.ledger.pending(7) == 1_500 and g.ledger.counts.duplicates == 1
    g.expire(T0 + 12 + 30)  # the last one: released by commit_lag
    assert g.ledger.pending(7) == 0 and g.ledger.used(7, DAY) == 4_500  # used stays
