"""The pacer core: plans, lease rounds across holders, silent holders, days, controllers."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fleet.plan import HOURS_PER_WEEK, learn_profile
from pacing.gate import Gate, HolderReport, MultiplicativeThrottle, PIThrottle, ThrottleState
from pacing.pacer import CampaignBudget, Pacer, PacerSettings, Spend

MIDNIGHT = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
NOON = MIDNIGHT + 12 * 3600


def campaign(cid: int = 1, **kw: object) -> CampaignBudget:
    base: dict[str, object] = {
        "campaign_id": cid,
        "daily_budget": 86_400_000,
        "total_budget": 0,
        "max_bid_cpm": 2_000_000,
    }
    base.update(kw)
    return CampaignBudget(**base)  # type: ignore[arg-type]


def report(holder: str, at: float, **kw: dict[int, int]) -> HolderReport:
    return HolderReport(holder=holder, sent_at=at, **kw)


def test_grants_follow_the_plan_and_split_by_traffic() -> None:
    p = Pacer(PacerSettings(interval=5, lead_intervals=2))
    p.report(report("a", NOON, opportunities={1: 300}), NOON)
    p.report(report("b", NOON, opportunities={1: 100}), NOON)
    rnd = p.step(NOON, [campaign(max_bid_cpm=1_000)], {1: Spend(43_200_000, 0)}, NOON)
    # Even and uniform: 1,000 micros a second; committed is on plan at noon; 10 s ahead.
    a, b = rnd.leases["a"].lease(1), rnd.leases["b"].lease(1)
    assert a is not None and b is not None
    assert a.grant + b.grant == 10_000
    assert a.grant == 3 * b.grant
    # In whole chunks of one worst-case impression (2,000 micros at a CPM of 2): what does
    # not make a chunk goes to the holder with the most traffic for what it holds.
    p2 = Pacer(PacerSettings(interval=5, lead_intervals=2))
    p2.report(report("a", NOON, opportunities={1: 300}), NOON)
    p2.report(report("b", NOON, opportunities={1: 100}), NOON)
    rnd = p2.step(NOON, [campaign()], {1: Spend(43_200_000, 0)}, NOON)
    grants = {n: hl.grants[0] for n, hl in rnd.leases.items()}
    assert grants == {"a": 8_000, "b": 2_000}
    assert a.expires_at == NOON + 15
    st = rnd.state.campaigns[1]
    assert st.budget == 86_400_000 and st.planned == 43_200_000 and st.committed == 43_200_000
    assert rnd.campaigns[0].granted == 10_000


def test_pending_and_unused_allowances_hold_back_new_grants() -> None:
    p = Pacer(PacerSettings(interval=5, lead_intervals=2))
    p.report(report("a", NOON), NOON)
    p.step(NOON, [campaign()], {1: Spend(43_200_000, 0)}, NOON)  # a holds 10,000 unused
    day = date(2026, 12, 7).toordinal()
    p.report(report("a", NOON + 5, used={1: 4_000}, days={1: day}, pending={1: 4_000}), NOON + 5)
    rnd = p.step(NOON + 5, [campaign()], {1: Spend(43_200_000, 0)}, NOON + 5)
    # target 43,215,000 - committed - pending 4,000 - unused 6,000 = 5,000 more
    lease = rnd.leases["a"].lease(1)
    assert lease is not None and lease.grant == 10_000 + 5_000


def test_a_silent_holder_gets_nothing_and_its_leases_expire_but_still_count() -> None:
    p = Pacer(PacerSettings(interval=5, lease_ttl=15, holder_ttl=10, clock_skew=2))
    p.report(report("a", NOON), NOON)
    p.report(report("b", NOON), NOON)
    p.step(NOON, [campaign()], {1: Spend(43_200_000, 0)}, NOON)
    expired = 0
    t = NOON
    for _ in range(6):
        t += 5
        p.report(report("a", t), t)
        rnd = p.step(t, [campaign()], {1: Spend(43_200_000, 0)}, t)
        assert "b" not in rnd.leases or t - NOON <= 10
        expired += rnd.leases_expired
    assert expired == 1  # b's one lease, once
    assert rnd.holders == 1
    # b's unused allowance still counts: a never gets the whole plan's lead
    st = rnd.campaigns[0]
    assert st.headroom < 86_400_000 - 43_200_000


def test_a_holder_is_forgotten_after_pending_ttl() -> None:
    p = Pacer(PacerSettings(interval=5, pending_ttl=60))
    p.report(report("a", NOON, pending={1: 5_000}), NOON)
    p.step(NOON, [campaign()], {}, NOON)
    assert p.holders == ["a"]
    p.step(NOON + 61, [campaign()], {}, NOON + 61)
    assert p.holders == []


def test_older_reports_are_ignored() -> None:
    p = Pacer()
    assert p.report(report("a", NOON), NOON)
    assert not p.report(report("a", NOON - 1), NOON)


def test_unbudgeted_and_paused_campaigns_are_not_paced() -> None:
    p = Pacer()
    rnd = p.step(
        NOON,
        [campaign(1, daily_budget=0), campaign(2, active=False), campaign(3)],
        {},
        NOON,
    )
    assert set(rnd.state.campaigns) == {3}


def test_a_new_day_starts_from_zero_used_and_a_fresh_controller() -> None:
    p = Pacer(PacerSettings(interval=5))
    end = MIDNIGHT + 86_400 - 5
    day = date(2026, 12, 7).toordinal()
    p.report(report("a", end, used={1: 80_000_000}, days={1: day}), end)
    p.step(end, [campaign()], {1: Spend(80_000_000, 0)}, end)
    nxt = MIDNIGHT + 86_400 + 5
    p.report(report("a", nxt, used={1: 80_000_000}, days={1: day}), nxt)
    rnd = p.step(nxt, [campaign()], {1: Spend(0, 0)}, nxt)
    lease = rnd.leases["a"].lease(1)
    assert lease is not None and lease.day == day + 1
    assert 0 < lease.grant <= 20_000  # yesterday's usage is not today's
    assert rnd.state.campaigns[1].throttle == 1.0


def test_total_budgets_and_flights_shape_the_day() -> None:
    p = Pacer()
    flight_end = MIDNIGHT + 4 * 86_400
    c = campaign(daily_budget=0, total_budget=100_000_000, flight_end=flight_end)
    rnd = p.step(NOON, [c], {1: Spend(0, 20_000_000)}, NOON)
    assert rnd.state.campaigns[1].budget == 20_000_000  # 80 left over 4 days


def test_the_learnt_profile_is_used() -> None:
    p = Pacer()
    counts = [0] * HOURS_PER_WEEK
    counts[12] = 10**9  # Monday noon
    p.set_profile(1, learn_profile(counts))
    plan = p.plan(campaign(), date(2026, 12, 7), 0)
    assert plan.hourly[12] > 0.9 * plan.total


def test_controllers_move_towards_the_plan() -> None:
    for ctl in (MultiplicativeThrottle(), PIThrottle()):
        s = ThrottleState(0.5, 0.5)
        down = ctl.step(s, planned=1_000, actual=4_000)
        up = ctl.step(s, planned=4_000, actual=1_000)
        assert down.throttle < 0.5 < up.throttle
        assert ctl.step(ThrottleState(1.0, 1.0), 4_000, 1_000).throttle == 1.0
        low = ThrottleState(1e-4, 1e-4)
        assert ctl.step(low, 0, 10).throttle >= 1e-4
    m = MultiplicativeThrottle()
    assert m.step(ThrottleState(0.01), 1_000, 0).throttle == 0.015  # idle: x1.5
    assert m.step(ThrottleState(0.01), 10**9, 1).throttle == 0.02  # at most x2 a step


def test_gates_and_pacer_round_trip() -> None:
    p = Pacer(PacerSettings(interval=5))
    g = Gate("a")
    g.count_opportunities(1, 10)
    p.report(g.report(NOON), NOON)
    rnd = p.step(NOON, [campaign()], {1: Spend(43_200_000, 0)}, NOON)
    g.install(rnd.state, rnd.leases["a"])
    assert g.check(1, 2_000_000, 0.5, NOON + 1, 0.0) == ""
    g.reserve("x", 1, 2_000_000, 0.5, NOON + 1)
    assert g.report(NOON + 2).used == {1: 1_000}


def test_an_hourly_cap_holds_while_catching_up() -> None:
    p = Pacer(PacerSettings(interval=5))
    p.report(report("a", NOON), NOON)
    c = campaign(hourly_cap=1_000, max_bid_cpm=1_000)
    rnd = p.step(NOON, [c], {1: Spend(0, 0)}, NOON)  # the plan wanted 12,000 by noon
    lease = rnd.leases["a"].lease(1)
    assert lease is not None and lease.grant == 1_000
    day = date(2026, 12, 7).toordinal()
    p.report(report("a", NOON + 5, used={1: 1_000}, days={1: day}, pending={1: 1_000}), NOON + 5)
    rnd = p.step(NOON + 5, [c], {1: Spend(0, 0)}, NOON + 5)
    lease = rnd.leases["a"].lease(1)
    assert lease is not None and lease.grant == 1_000  # nothing more this hour
    later = NOON + 3600
    p.report(report("a", later, used={1: 1_000}, days={1: day}), later)
    rnd = p.step(later, [c], {1: Spend(1_000, 0)}, later)
    lease = rnd.leases["a"].lease(1)
    assert lease is not None and lease.grant == 2_000  # the next hour's 1,000


def test_a_new_profile_shapes_the_next_plan_not_todays() -> None:
    p = Pacer()
    today = p.plan(campaign(), date(2026, 12, 7), 0)
    counts = [0] * HOURS_PER_WEEK
    counts[24 + 12] = 10**9  # Tuesday noon
    p.set_profile(1, learn_profile(counts))
    assert p.plan(campaign(), date(2026, 12, 7), 0) is today
    tomorrow = p.plan(campaign(), date(2026, 12, 8), 0)
    assert tomorrow.hourly[12] > 0.9 * tomorrow.total
