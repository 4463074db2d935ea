"""The pacer's core: plans, controller steps and lease rounds, from plain data. No I/O.

Every ``interval`` seconds the service reads committed spend (``campaign_spend``) and the
campaigns, and calls :meth:`Pacer.step`; between steps it hands each bidder report to
:meth:`Pacer.report`. A step, per campaign with a budget:

1. the day's plan (cached per campaign and local day; rebuilt when the campaign's budget,
   timezone, mode or flight changes, or its traffic profile is replaced);
2. the controller: needed spend over the next interval (the plan's target then, less committed
   and pending spend) against the demand the throttle let through in the last one (reserved
   plus what allowances refused), giving the throttle;
3. a lease round (:func:`pacing.gate.leases.allocate`) granting up to the plan's target one
   interval further ahead, never past the budget's headroom.

Holders are the bidder processes that reported within ``holder_ttl`` (a service may also pass
the set its heartbeats say are alive). A silent holder gets no new grants; its lease runs out
(the dead-man switch), and its last reported pending spend keeps counting for ``pending_ttl``
(by then its bids are billed, and so in committed spend, or will never be).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from pacing.gate.controller import Controller, MultiplicativeThrottle, ThrottleState
from pacing.gate.leases import (
    CampaignPacing,
    HolderLeases,
    HolderReport,
    HolderView,
    Lease,
    PacingState,
    allocate,
)
from pacing.gate.plan import DayPlan, Profile, day_budget, local_day, make_plan, zone


@dataclass(frozen=True, slots=True)
class CampaignBudget:
    """What the pacer needs of a campaign (from the config database)."""

    campaign_id: int
    daily_budget: int
    total_budget: int
    max_bid_cpm: int
    timezone: str = "UTC"
    pacing_mode: str = "even"
    flight_start: float | None = None  # epoch seconds
    flight_end: float | None = None
    hourly_cap: int = 0
    active: bool = True

    @property
    def budgeted(self) -> bool:
        return bool(self.daily_budget or self.total_budget)


@dataclass(frozen=True, slots=True)
class Spend:
    """Committed spend of one campaign: today (its local day) and on earlier days."""

    today: int = 0
    before: int = 0


@dataclass(frozen=True, slots=True)
class PacerSettings:
    interval: float = 5.0  # seconds between steps
    lease_ttl: float = 15.0  # a lease lives this long unless renewed
    clock_skew: float = 2.0  # a lease counts as live this long past its expiry
    holder_ttl: float = 10.0  # a holder not heard from for this long gets no new grants
    pending_ttl: float = 960.0  # a silent holder's pending spend counts this long
    exposure_fraction: float = 0.002  # worst-case excess granted, as a share of the budget
    lead_intervals: float = 2.0  # grants reach the plan's target this many intervals ahead

    def __post_init__(self) -> None:
        if min(self.interval, self.lease_ttl, self.holder_ttl, self.pending_ttl) <= 0:
            raise ValueError("pacer intervals and lifetimes must be greater than 0")
        if self.lease_ttl < self.interval:
            raise ValueError("lease_ttl must be at least the interval (leases are renewed)")
        if not 0 <= self.exposure_fraction <= 1 or self.clock_skew < 0:
            raise ValueError("exposure_fraction is in [0, 1] and clock_skew >= 0")
        if self.lead_intervals < 1:
            raise ValueError("lead_intervals must be at least 1")


@dataclass(frozen=True, slots=True)
class CampaignStep:
    """One campaign after a step, for metrics and reports."""

    campaign_id: int
    day: date
    budget: int
    planned: int  # the plan's target now
    committed: int
    pending: int
    throttle: float
    granted: int  # added by this round
    headroom: int
    leases: int


@dataclass
class Round:
    state: PacingState
    leases: dict[str, HolderLeases]
    campaigns: list[CampaignStep]
    leases_expired: int  # leases that ran out unrenewed since the last step
    holders: int


@dataclass(slots=True)
class _Holder:
    report: HolderReport
    heard_at: float
    leases: dict[int, Lease] = field(default_factory=dict)
    counted_used: dict[int, int] = field(default_factory=dict)  # used at the last step


@dataclass(slots=True)
class _Control:
    day: date
    state: ThrottleState
    blocked: int = 0  # since the last step


class Pacer:
    """See the module doc."""

    def __init__(
        self, settings: PacerSettings = PacerSettings(), controller: Controller | None = None
    ) -> None:
        self.settings = settings
        self.controller: Controller = controller or MultiplicativeThrottle()
        self._holders: dict[str, _Holder] = {}
        self._plans: dict[int, tuple[tuple[object, ...], DayPlan]] = {}
        self._control: dict[int, _Control] = {}
        self._profiles: dict[int, Profile] = {}
        self._last_step: float | None = None

    # -- inputs between steps ---------------------------------------------------------------------
    def report(self, report: HolderReport, now: float) -> bool:
        """Take a holder's report; an older one than what is held is ignored (False)."""
        h = self._holders.get(report.holder)
        if h is not None and report.sent_at < h.report.sent_at:
            return False
        if h is None:
            h = self._holders[report.holder] = _Holder(report, now)
        else:
            h.report, h.heard_at = report, now
        for cid, micros in report.blocked.items():
            c = self._control.get(cid)
            if c is not None:
                c.blocked += micros
        return True

    def set_profile(self, campaign_id: int, profile: Profile) -> None:
        """A campaign's learnt traffic profile (used from its next day's plan)."""
        self._profiles[campaign_id] = profile

    @staticmethod
    def days(now: float, campaigns: Iterable[CampaignBudget]) -> dict[int, date]:
        """Each campaign's local day at ``now``: the days whose committed spend a step needs."""
        return {c.campaign_id: local_day(zone(c.timezone), now) for c in campaigns}

    def plan(self, campaign: CampaignBudget, day: date, spent_before: int) -> DayPlan:
        c = campaign
        days_left = None
        tz = zone(c.timezone)
        if c.flight_end is not None:
            days_left = max(1, local_day(tz, c.flight_end - 1e-6).toordinal() - day.toordinal() + 1)
        budget = day_budget(c.daily_budget, c.total_budget, spent_before, days_left)
        profile = self._profiles.get(c.campaign_id) or Profile.uniform()
        key = (
            day,
            budget,
            c.timezone,
            c.pacing_mode,
            c.flight_start,
            c.flight_end,
            c.hourly_cap,
            id(profile),
        )
        cached = self._plans.get(c.campaign_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        plan = make_plan(
            c.campaign_id,
            tz,
            day,
            budget,
            c.pacing_mode,
            profile,
            hourly_cap=c.hourly_cap,
            flight_start=c.flight_start,
            flight_end=c.flight_end,
        )
        self._plans[c.campaign_id] = (key, plan)
        return plan

    # -- the step ---------------------------------------------------------------------------------
    def step(
        self,
        now: float,
        campaigns: Sequence[CampaignBudget],
        spend: Mapping[int, Spend],
        committed_at: float,
        alive: set[str] | None = None,
    ) -> Round:
        """One pacing round at ``now`` (see the module doc). ``spend``: committed spend per
        campaign for the days :meth:`days` gave, read at ``committed_at``."""
        s = self.settings
        for name in [n for n, h in self._holders.items() if now - h.heard_at > s.pending_ttl]:
            del self._holders[name]
        holders = self._holders
        live = {
            n
            for n, h in holders.items()
            if now - h.heard_at <= s.holder_ttl and (alive is None or n in alive)
        }
        expired = 0
        for n, h in holders.items():
            if n not in live:
                for cid, lease in list(h.leases.items()):
                    if now >= lease.expires_at + s.clock_skew:
                        del h.leases[cid]
                        expired += 1
        out_leases: dict[str, dict[int, Lease]] = {n: {} for n in live}
        pacing: dict[int, CampaignPacing] = {}
        steps: list[CampaignStep] = []
        dt = s.interval if self._last_step is None else max(1e-3, now - self._last_step)
        seen: set[int] = set()
        for c in campaigns:
            if not (c.active and c.budgeted):
                continue
            cid = c.campaign_id
            seen.add(cid)
            tz = zone(c.timezone)
            day = local_day(tz, now)
            sp = spend.get(cid, Spend())
            plan = self.plan(c, day, sp.before)
            views = []
            used_delta = 0
            day_ord = day.toordinal()
            for n, h in holders.items():
                rep = h.report
                cur = h.leases.get(cid)
                if cur is not None and cur.day != day_ord:
                    cur = None
                is_live = n in live
                if cur is None and not is_live and not rep.pending.get(cid):
                    continue  # nothing of this campaign is left with it
                # Usage reported for another day says nothing of today's (0 is safe: lower
                # than the truth only makes the grants smaller).
                used = rep.used.get(cid, 0) if rep.days.get(cid) == day_ord else 0
                used_delta += max(0, used - h.counted_used.get(cid, used))
                h.counted_used[cid] = used
                views.append(
                    HolderView(
                        holder=n,
                        grant=cur.grant if cur is not None else 0,
                        used=used,
                        pending=rep.pending.get(cid, 0),
                        weight=float(rep.opportunities.get(cid, 0)),
                        lease_live=cur is not None and now < cur.expires_at + s.clock_skew,
                        alive=is_live,
                    )
                )
            pending = sum(v.pending for v in views)
            control = self._control.get(cid)
            if control is None or control.day != day:
                control = self._control[cid] = _Control(day, ThrottleState())
            else:
                needed = plan.target(now + s.interval) - sp.today - pending
                demand = int((used_delta + control.blocked) * s.interval / dt)
                control.state = self.controller.step(control.state, max(0, needed), demand)
            control.blocked = 0
            worst = max(1, c.max_bid_cpm // 1000)
            target = plan.target(now + s.lead_intervals * s.interval)
            alloc = allocate(
                plan.budget,
                sp.today,
                target,
                views,
                chunk=worst,
                worst_imp=worst,
                exposure_fraction=s.exposure_fraction,
            )
            expires = min(now + s.lease_ttl, plan.end)
            for n, grant in alloc.grants.items():
                lease = Lease(
                    campaign_id=cid,
                    day=day.toordinal(),
                    grant=grant,
                    exposure=alloc.exposures[n],
                    expires_at=expires,
                    issued_at=now,
                )
                holders[n].leases[cid] = lease
                out_leases[n][cid] = lease
            pacing[cid] = CampaignPacing(
                campaign_id=cid,
                day=day.toordinal(),
                day_end=plan.end,
                budget=plan.budget,
                committed=sp.today,
                committed_at=committed_at,
                planned=plan.target(now),
                throttle=control.state.throttle,
            )
            steps.append(
                CampaignStep(
                    cid,
                    day,
                    plan.budget,
                    plan.target(now),
                    sp.today,
                    pending,
                    control.state.throttle,
                    alloc.granted,
                    alloc.headroom,
                    len(alloc.grants),
                )
            )
        for cid in [cid for cid in self._control if cid not in seen]:
            del self._control[cid]
            self._plans.pop(cid, None)
        self._last_step = now
        state = PacingState(issued_at=now, campaigns=pacing)
        leases = {n: HolderLeases(holder=n, issued_at=now, leases=out_leases[n]) for n in live}
        return Round(state, leases, steps, expired, len(live))
