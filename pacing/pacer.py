"""The pacer's core: plans, controller steps and lease rounds, from plain data. No I/O.

Every ``interval`` seconds the service reads committed spend (``campaign_spend``) and the
campaigns, and calls :meth:`Pacer.step`; between steps it hands each bidder report to
:meth:`Pacer.report`. A step, per campaign with a budget:

1. the day's plan (cached per campaign and local day; rebuilt when the campaign's budget,
   timezone, mode, flight or dayparting changes, or its traffic profile is replaced);
2. the controller: the allowance the holders had over the last interval (granted plus unused)
   against the demand the throttle let through (reserved plus what allowances refused), giving
   the throttle (see :mod:`pacing.gate.controller`);
3. a lease round (the rule of :func:`pacing.gate.leases.allocate`, run over every campaign at
   once by :func:`pacing.allocation.allocate_all`) granting up to the plan's target
   ``lead_intervals`` ahead, never past the budget's headroom.

Per-holder figures live in campaign x holder matrices, so a step costs numpy work, not a Python
loop over every campaign and holder.

Holders are the bidder processes that reported within ``holder_ttl`` (a service may also pass
the set its heartbeats say are alive). A silent holder gets no new grants; its lease runs out
(the dead-man switch), and its last reported pending spend keeps counting for ``pending_ttl``
(by then its bids are billed, and so in committed spend, or will never be).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from fleet.plan import DayPlan, Profile, day_budget, local_day, make_plan, zone
from pacing.allocation import allocate_all
from pacing.gate.controller import Controller, MultiplicativeThrottle, ThrottleState
from pacing.gate.leases import CampaignPacing, HolderLeases, HolderReport, PacingState


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
    hours_of_week: tuple[int, ...] = ()  # dayparting, in its timezone (empty: every hour)

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
    exposure_fraction: float = 0.01  # worst-case excess granted, as a share of the budget
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


_FIELDS_I = ("used", "used_day", "pending", "grant", "lease_day", "exposure", "counted", "live")


class _Matrix:
    """Campaign x holder figures: rows follow the campaign list, columns the holders."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}
        self._sorted = np.zeros(0, np.int64)  # campaign ids in order, and their rows
        self._rows_of_sorted = np.zeros(0, np.int64)
        self.cols: dict[str, int] = {}
        self.names: list[str] = []
        self.i: dict[str, np.ndarray] = {f: np.zeros((0, 0), np.int64) for f in _FIELDS_I}
        self.opps = np.zeros((0, 0), np.float64)
        self.expires = np.zeros((0, 0), np.float64)

    def _all(self) -> list[tuple[str, np.ndarray]]:
        return [*self.i.items(), ("opps", self.opps), ("expires", self.expires)]

    def _set(self, name: str, value: np.ndarray) -> None:
        if name == "opps":
            self.opps = value
        elif name == "expires":
            self.expires = value
        else:
            self.i[name] = value

    def set_rows(self, ids: list[int]) -> None:
        if list(self.rows) == ids:
            return
        old = self.rows
        take = np.array([old.get(c, -1) for c in ids], dtype=np.int64)
        for name, m in self._all():
            fresh = np.zeros((len(ids), m.shape[1]), m.dtype)
            keep = take >= 0
            fresh[keep] = m[take[keep]]
            self._set(name, fresh)
        self.rows = {c: r for r, c in enumerate(ids)}
        id_array = np.array(ids, dtype=np.int64)
        order = np.argsort(id_array, kind="stable")
        self._sorted, self._rows_of_sorted = id_array[order], order.astype(np.int64)

    def lookup(self, campaign_ids: np.ndarray) -> np.ndarray:
        """Rows of the campaign ids (-1 for ids without a row)."""
        if len(self._sorted) == 0:
            return np.full(len(campaign_ids), -1, np.int64)
        pos = np.searchsorted(self._sorted, campaign_ids).clip(0, len(self._sorted) - 1)
        return np.where(self._sorted[pos] == campaign_ids, self._rows_of_sorted[pos], -1)

    def column(self, holder: str) -> int:
        col = self.cols.get(holder)
        if col is None:
            col = self.cols[holder] = len(self.names)
            self.names.append(holder)
            for name, m in self._all():
                self._set(name, np.concatenate([m, np.zeros((m.shape[0], 1), m.dtype)], axis=1))
        return col

    def drop_columns(self, holders: set[str]) -> None:
        keep = [i for i, n in enumerate(self.names) if n not in holders]
        for name, m in self._all():
            self._set(name, m[:, keep])
        self.names = [self.names[i] for i in keep]
        self.cols = {n: i for i, n in enumerate(self.names)}


@dataclass(slots=True)
class _Control:
    day: date
    state: ThrottleState
    blocked: int = 0  # since the last step
    allowed: int = 0  # allowance available over the last interval (granted + unused)


class Pacer:
    """See the module doc."""

    def __init__(
        self, settings: PacerSettings = PacerSettings(), controller: Controller | None = None
    ) -> None:
        self.settings = settings
        self.controller: Controller = controller or MultiplicativeThrottle()
        self._m = _Matrix()
        self._reports: dict[str, HolderReport] = {}
        self._heard: dict[str, float] = {}
        self._plans: dict[int, tuple[tuple[object, ...], DayPlan]] = {}
        self._control: dict[int, _Control] = {}
        self._profiles: dict[int, Profile] = {}
        self._last_step: float | None = None
        # holders reporting since the last step, in the order they first reported: a dict, not a
        # set, so that columns are assigned alike in every process (set order follows the hash seed)
        self._dirty: dict[str, None] = {}
        self._hour_base: dict[int, tuple[tuple[date, int], int]] = {}  # spend at the hour's start
        self._opp_reports: dict[str, list[dict[int, int]]] = {}

    @property
    def holders(self) -> list[str]:
        return list(self._m.names)

    # -- inputs between steps ---------------------------------------------------------------------
    def report(self, report: HolderReport, now: float) -> bool:
        """Take a holder's report; an older one than what is held is ignored (False)."""
        held = self._reports.get(report.holder)
        if held is not None and report.sent_at < held.sent_at:
            return False
        self._reports[report.holder] = report
        self._heard[report.holder] = now
        self._dirty[report.holder] = None
        if report.opportunities:
            self._opp_reports.setdefault(report.holder, []).append(report.opportunities)
        for cid, micros in report.blocked.items():
            c = self._control.get(cid)
            if c is not None:
                c.blocked += micros
        return True

    def _ingest(self) -> None:
        """Move the reports that came since the last step into the matrices, in one batch."""
        m = self._m
        dirty = [n for n in self._dirty if n in self._reports]
        self._dirty.clear()
        if not dirty:
            return
        cols = [m.column(n) for n in dirty]
        mi = m.i
        for name in ("used", "used_day", "pending"):
            mi[name][:, cols] = 0
        m.opps[:, cols] *= 0.5  # a moving average of each holder's share of the traffic
        for what in ("used", "days", "pending", "opps"):
            keys: list[int] = []
            values: list[int] = []
            at_col: list[int] = []
            for n, col in zip(dirty, cols, strict=True):
                rep = self._reports[n]
                dicts = (
                    self._opp_reports.pop(n, [])
                    if what == "opps"
                    else [
                        rep.used if what == "used" else rep.days if what == "days" else rep.pending
                    ]
                )
                for d in dicts:
                    keys.extend(d)
                    values.extend(d.values())
                    at_col.extend([col] * len(d))
            if not keys:
                continue
            rows = m.lookup(np.array(keys, dtype=np.int64))
            keep = rows >= 0
            r, c = rows[keep], np.array(at_col, dtype=np.int64)[keep]
            v = np.array(values, dtype=np.int64)[keep]
            if what == "used":
                mi["used"][r, c] = v
            elif what == "days":
                mi["used_day"][r, c] = v
            elif what == "pending":
                mi["pending"][r, c] = v
            else:
                np.add.at(m.opps, (r, c), 0.5 * v)

    def set_profile(self, campaign_id: int, profile: Profile) -> None:
        """A campaign's learnt traffic profile, for its next plan (today's keeps its shape)."""
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
        # The profile is not part of the key: a day keeps the shape it started with (a new
        # profile takes effect with the next plan: the next day, or a budget or flight change).
        key = (
            day,
            budget,
            c.timezone,
            c.pacing_mode,
            c.flight_start,
            c.flight_end,
            c.hourly_cap,
            c.hours_of_week,
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
            hours_of_week=c.hours_of_week,
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
        campaign for the days :meth:`days` gave, read at ``committed_at``; ``alive``: the
        holders the service knows to be up (None: judge by reports alone)."""
        s, m = self.settings, self._m
        gone = {n for n, at in self._heard.items() if now - at > s.pending_ttl}
        if gone:
            m.drop_columns(gone)
            for n in gone:
                del self._heard[n]
                del self._reports[n]
                self._opp_reports.pop(n, None)
        paced = [c for c in campaigns if c.active and c.budgeted]
        ids = [c.campaign_id for c in paced]
        m.set_rows(ids)
        self._ingest()
        for cid in [cid for cid in self._control if cid not in m.rows]:
            del self._control[cid]
            self._plans.pop(cid, None)
            self._hour_base.pop(cid, None)
        names = m.names
        live = np.array(
            [now - self._heard[n] <= s.holder_ttl and (alive is None or n in alive) for n in names],
            dtype=bool,
        )
        len(paced)
        days = [local_day(zone(c.timezone), now) for c in paced]
        day_ord = np.array([d.toordinal() for d in days], dtype=np.int64)
        plans = [
            self.plan(c, d, spend.get(c.campaign_id, Spend()).before)
            for c, d in zip(paced, days, strict=True)
        ]
        committed = np.array([spend.get(i, Spend()).today for i in ids], dtype=np.int64)
        budget = np.array([p.budget for p in plans], dtype=np.int64)
        ahead = now + s.lead_intervals * s.interval
        target = np.array([p.target(ahead) for p in plans], dtype=np.int64)
        planned_now = [p.target(now) for p in plans]
        worst = np.array([max(1, c.max_bid_cpm // 1000) for c in paced], dtype=np.int64)

        # Leases of another day are gone; those past expiry (and the skew) are dead.
        mi = m.i
        today = mi["lease_day"] == day_ord[:, None]
        lease_live = today & (now < m.expires + s.clock_skew)
        # Leases that ran out unrenewed (their holder fell silent) since the last step.
        expired = int((mi["live"].astype(bool) & ~lease_live & today & ~live[None, :]).sum())
        grant = np.where(today, mi["grant"], 0)
        used = np.where(mi["used_day"] == day_ord[:, None], mi["used"], 0)
        pending = mi["pending"]
        # An hourly cap holds even when the campaign is catching up: what the hour may still
        # take is the cap less what was spent since the hour began (committed + pending then).
        spent = committed + pending.sum(axis=1)
        for r, p in enumerate(plans):
            if p.hourly_cap:
                hour = (p.day, p.hour_index(now))
                base = self._hour_base.get(ids[r])
                if base is None or base[0] != hour:
                    base = self._hour_base[ids[r]] = (hour, int(spent[r]))
                target[r] = min(int(target[r]), base[1] + p.hourly_cap)
        counted = np.where(mi["lease_day"] == day_ord[:, None], mi["counted"], used)
        used_delta = np.maximum(used - np.minimum(counted, used), 0).sum(axis=1)
        mi["counted"] = used.copy()

        # Controllers.
        dt = s.interval if self._last_step is None else max(1e-3, now - self._last_step)
        throttles = []
        for r, c in enumerate(paced):
            control = self._control.get(c.campaign_id)
            if control is None or control.day != days[r]:
                control = self._control[c.campaign_id] = _Control(days[r], ThrottleState())
            else:
                # The throttle aims the demand it lets through at the allowance there was: the
                # leases bound the money, the throttle spreads it over the interval's traffic.
                demand = int((int(used_delta[r]) + control.blocked) * s.interval / dt)
                control.state = self.controller.step(control.state, control.allowed, demand)
            control.blocked = 0
            throttles.append(control.state.throttle)

        a = allocate_all(
            budget,
            committed,
            target,
            grant,
            used,
            pending,
            m.opps,
            lease_live,
            live,
            worst,
            worst,
            s.exposure_fraction,
        )
        for r, c in enumerate(paced):
            self._control[c.campaign_id].allowed = int(a.granted[r]) + int(a.outstanding[r])
        expires = np.array([min(now + s.lease_ttl, p.end) for p in plans])
        cols = np.flatnonzero(live)
        mi["grant"][:, cols] = a.grants[:, cols]
        mi["exposure"][:, cols] = a.exposures[:, cols]
        mi["lease_day"][:, cols] = day_ord[:, None]
        m.expires[:, cols] = expires[:, None]
        mi["live"] = (
            (mi["lease_day"] == day_ord[:, None]) & (now < m.expires + s.clock_skew)
        ).astype(np.int64)
        out: dict[str, HolderLeases] = {}
        day_list = [d.toordinal() for d in days]
        exp_list = expires.tolist()
        grants_t, exp_t = a.grants.T, a.exposures.T
        for col in cols.tolist():
            out[names[col]] = HolderLeases(
                holder=names[col],
                issued_at=now,
                campaign_ids=ids,
                days=day_list,
                grants=grants_t[col].tolist(),
                exposures=exp_t[col].tolist(),
                expires_at=exp_list,
            )
        pacing: dict[int, CampaignPacing] = {}
        steps: list[CampaignStep] = []
        n_live = int(live.sum())
        for r in range(len(paced)):
            pacing[ids[r]] = CampaignPacing(
                campaign_id=ids[r],
                day=days[r].toordinal(),
                day_end=plans[r].end,
                budget=plans[r].budget,
                committed=int(committed[r]),
                committed_at=committed_at,
                planned=planned_now[r],
                throttle=throttles[r],
            )
            steps.append(
                CampaignStep(
                    ids[r],
                    days[r],
                    plans[r].budget,
                    planned_now[r],
                    int(committed[r]),
                    int(a.pending[r]),
                    throttles[r],
                    int(a.granted[r]),
                    int(a.headroom[r]),
                    n_live,
                )
            )
        self._last_step = now
        state = PacingState(issued_at=now, campaigns=pacing, clock_skew=s.clock_skew)
        return Round(state, out, steps, expired, n_live)
