"""Pacing: a discrete simulation of one day that drives the real pacing code.

    python -m bench pacing          # the pacer, the leases alone, the naive baseline
    python -m bench pacing --pi     # and the PI controller

Setup (``SimConfig``): 16 bidder processes, each with its own ``pacing.gate.Gate``, and one
``pacing.pacer.Pacer``; one day of one-second ticks with a daily traffic cycle; the plans'
traffic profiles off by 20 % per hour (log-normal forecast error); first-price auctions whose
win probability the bidders' market model misjudges by up to 20 %; win notices after 0.2-10 s
(a few lost, a few late beyond the ledger's window, loss notices for a third of the losses),
billing 0-300 s after the impression with 5 % of billing notices duplicated; bidder 5 crashes at
10:00 with its reservations outstanding and comes back 10 minutes later as a new process;
budgets log-uniform from 10 to 10,000 units (three orders of magnitude), most campaigns with
1.5-4x the supply they need, a few supply-limited, a fifth of them "asap".

The day is compressed in computing time, not in simulated time: one simulated day runs in
seconds. Prices scale with budgets so that each campaign needs 300-8,000 impressions; that keeps
the run short without changing what is measured (every figure is relative to the budget).

Printed for the pacer (multiplicative throttle and leases), for the controller off (the throttle
pinned at 1, the leases alone; ``pacing.gate.controller`` says what the comparison shows) and
for a naive baseline (bid on everything while recorded spend, read every 2 s, is under the
budget), all on the same seeded day:
overdelivery median and max over campaigns; utilisation of campaigns with supply >= 1.5x the
need; the share of hours within +-20 % of plan and the hourly MAPE (even campaigns with enough
supply, hours with a planned spend); the time from the budget being reached (delivered spend
within one impression of it) to the campaign's last bid. Aims: overdelivery median <= 0.1 % and
max <= 1 %; utilisation >= 98 %; >= 90 % of hours within +-20 %; last bid within 10 s. Also:
the share of bids an allowance refused, and the share placed in the first second of a 5 s
lease interval (20 % when bids are spread evenly over it).

Speed: the simulation draws each lease interval's opportunities in one numpy call (10-20 % less
CPU than a call per second); the rest is the real pacing code (``Pacer.step`` and its report
ingestion about half, the gates most of the other half), about 25 CPU seconds a paced day; the
runs go to separate processes.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import math
import os
import random
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from pacing.gate import Gate, GateSettings, LedgerSettings, Profile, worst_cost
from pacing.gate.controller import Controller, MultiplicativeThrottle, PIThrottle, ThrottleState
from pacing.pacer import CampaignBudget, Pacer, PacerSettings, Spend

DAY = date(2026, 12, 7)  # a Monday
DAY_START = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp()
SECONDS = 86_400


@dataclass(frozen=True)
class SimConfig:
    bidders: int = 16
    campaigns: int = 20
    supply_limited: int = 3
    seconds: int = SECONDS
    seed: int = 7
    forecast_error: float = 0.2
    market_error: float = 0.2
    max_billing_delay: float = 300.0
    crash_bidder: int = 5
    crash_at: float = 10 * 3600.0
    down_for: float = 600.0
    min_impressions: int = 3_000
    max_impressions: int = 15_000
    min_budget: int = 10_000_000
    max_budget: int = 10_000_000_000
    report_every: int = 5


@dataclass
class _Campaign:
    budget: CampaignBudget
    p_win: float
    p_pred: float
    price: int  # CPM micros
    rate: float  # opportunities per second at the cycle's mean
    ratio: float  # supply over need
    mode: str
    won_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    won: int = 0
    billed: int = 0
    last_bid: float = -1.0
    cap_at: float | None = None


@dataclass(frozen=True)
class Result:
    name: str
    overdelivery: list[float]  # per campaign, fraction of the budget
    utilisation: list[float]  # campaigns with supply >= 1.5x
    hours_within: float
    hourly_mape: float
    cap_to_last_bid: list[float]
    bids: int
    refused: float = 0.0  # share of throttle-passed bids the allowance or exposure refused
    burst: float = 0.0  # share of bids in the first second of a lease interval (even: 20 %)

    HEADER = (
        f"{'':<26}{'overdelivery':>20}{'utilisation':>18}{'hours':>9}{'hourly':>8}"
        f"{'cap -> last bid':>18}{'bids':>10}{'refused':>9}{'1st s':>7}\n"
        f"{'':<26}{'median':>10}{'max':>10}{'mean':>9}{'min':>9}{'+-20 %':>9}{'MAPE':>8}"
        f"{'median':>9}{'max':>9}{'':>10}{'':>9}{'':>7}"
    )

    def line(self) -> str:
        od, util = self.overdelivery, self.utilisation
        cap = self.cap_to_last_bid or [0.0]
        return (
            f"{self.name:<26}{100 * statistics.median(od):9.3f}%{100 * max(od):9.3f}%"
            f"{100 * statistics.mean(util):8.2f}%{100 * min(util):8.2f}%"
            f"{100 * self.hours_within:8.1f}%{100 * self.hourly_mape:7.1f}%"
            f"{statistics.median(cap):8.1f}s{max(cap):8.1f}s{self.bids:>10,}"
            f"{100 * self.refused:8.1f}%{100 * self.burst:6.1f}%"
        )


def cycle(t: float) -> float:
    """Traffic relative to the day's mean at second ``t`` of the day (low at night)."""
    return 1.0 + 0.7 * math.sin(2 * math.pi * (t / SECONDS - 0.375))


def make_campaigns(cfg: SimConfig, rng: random.Random) -> list[_Campaign]:
    out = []
    lo, hi = math.log(cfg.min_budget), math.log(cfg.max_budget)
    for i in range(cfg.campaigns):
        frac = i / max(1, cfg.campaigns - 1)
        budget = int(math.exp(lo + (hi - lo) * frac))  # spread evenly on the log scale
        impressions = int(
            math.exp(rng.uniform(math.log(cfg.min_impressions), math.log(cfg.max_impressions)))
        )
        price = max(1000, budget * 1000 // impressions)
        p_win = rng.uniform(0.2, 0.6)
        p_pred = min(0.95, p_win * math.exp(rng.uniform(-cfg.market_error, cfg.market_error)))
        limited = i % max(1, cfg.campaigns // max(1, cfg.supply_limited)) == 1 and (
            i // max(1, cfg.campaigns // max(1, cfg.supply_limited)) < cfg.supply_limited
        )
        ratio = rng.uniform(0.5, 0.9) if limited else rng.uniform(1.5, 4.0)
        cost = price // 1000
        rate = ratio * budget / (SECONDS * p_win * cost)
        mode = "asap" if i % 5 == 2 else "even"
        cb = CampaignBudget(
            campaign_id=i + 1,
            daily_budget=budget,
            total_budget=0,
            max_bid_cpm=price,
            pacing_mode=mode,
        )
        out.append(_Campaign(cb, p_win, p_pred, price, rate, ratio, mode))
    return out


def forecast_profile(rng: random.Random, error: float) -> Profile:
    """The plan's profile: the true hourly cycle of the sim's Monday, each hour off by a
    log-normal factor with sigma ``error``; the other hours of the week uniform."""
    weights = [1.0] * 168
    for h in range(24):
        true = sum(cycle(h * 3600 + s) for s in range(0, 3600, 60)) / 60
        weights[h] = true * math.exp(rng.gauss(0.0, error))
    return Profile(tuple(weights))


class _Sim:
    def __init__(self, cfg: SimConfig, controller: Controller | None) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.np = np.random.default_rng(cfg.seed)
        self.campaigns = make_campaigns(cfg, self.rng)
        self.profiles = [forecast_profile(self.rng, cfg.forecast_error) for _ in self.campaigns]
        self.paced = controller is not None
        self.events: list[tuple[float, int, int, str, int, int]] = []
        self.seq = 0
        self.billed_txids: set[str] = set()
        self.committed = [0] * len(self.campaigns)
        self.bids = 0
        self.refused = 0
        self.first_second_bids = 0  # bids in the first second of a lease interval
        settings = GateSettings(
            max_state_age=30.0,
            ledger=LedgerSettings(win_ttl=60.0, billing_ttl=900.0, commit_lag=30.0),
        )
        self.gate_settings = settings
        self.gates: dict[int, Gate | None] = {
            b: Gate(f"bidder-{b}", settings) for b in range(cfg.bidders)
        }
        self.pacer = Pacer(PacerSettings(), controller) if controller is not None else None
        self.interval = int(PacerSettings().interval)
        if self.pacer is not None:
            for c, p in zip(self.campaigns, self.profiles, strict=True):
                self.pacer.set_profile(c.budget.campaign_id, p)
        self.naive_read = [0] * len(self.campaigns)
        self._opps = np.zeros((1, len(self.campaigns), cfg.bidders), dtype=np.int64)

    # -- notices --------------------------------------------------------------------------------
    def push(self, at: float, kind: int, bidder: int, txid: str, ci: int, cost: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, bidder, txid, ci, cost))  # type: ignore[arg-type]

    def outcome(self, now: float, bidder: int, txid: str, ci: int, c: _Campaign) -> None:
        rng = self.rng
        cost = c.price // 1000
        if rng.random() < c.p_win:
            c.won += cost
            hour = min(23, int((now - DAY_START) // 3600))
            if hour >= 0:
                c.won_by_hour[hour] += cost
            if c.cap_at is None and c.won >= c.budget.daily_budget - cost:
                c.cap_at = now
            u = rng.random()
            if u < 0.03:
                pass  # the win notice is lost; billing still comes
            elif u < 0.04:
                self.push(now + rng.uniform(90.0, 200.0), 0, bidder, txid, ci, cost)  # late
            else:
                self.push(now + 0.2 + min(9.8, rng.expovariate(1.0)), 0, bidder, txid, ci, cost)
            bill_at = now + rng.uniform(0.0, self.cfg.max_billing_delay)
            self.push(bill_at, 2, bidder, txid, ci, cost)
            if rng.random() < 0.05:
                self.push(bill_at + rng.uniform(0.0, 60.0), 2, bidder, txid, ci, cost)
        elif rng.random() < 0.33:
            self.push(now + rng.uniform(1.0, 3.0), 1, bidder, txid, ci, 0)

    def deliver(self, now: float) -> None:
        events = self.events
        while events and events[0][0] <= now:
            at, _, kind, bidder, txid, ci, cost = heapq.heappop(events)  # type: ignore[misc]
            if kind == 2 and txid not in self.billed_txids:  # the tracker: exactly once
                self.billed_txids.add(txid)
                self.committed[ci] += cost
                self.campaigns[ci].billed += cost
            gate = self.gates.get(bidder)
            if gate is None:
                continue  # the bidder is down: nobody follows this transaction
            if kind == 0:
                gate.win(txid, cost, at)
            elif kind == 1:
                gate.loss(txid, at)
            else:
                gate.billing(txid, cost, at)

    # -- the day ----------------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        n_c, n_b = len(self.campaigns), cfg.bidders
        rates = np.repeat(np.array([c.rate for c in self.campaigns])[:, None] / n_b, n_b, axis=1)
        prices = [c.price for c in self.campaigns]
        ids = [c.budget.campaign_id for c in self.campaigns]
        budgets = [c.budget for c in self.campaigns]
        throttle = np.ones(n_c)
        seen = np.zeros((n_c, n_b), dtype=np.int64)
        crashed = False
        # Opportunities are drawn a block of ticks at a time (the throttle changes only at a
        # pacer step, at a block's first tick): one numpy call per block, not per second.
        block = max(1, cfg.report_every)
        cycles = np.array([cycle(t) for t in range(cfg.seconds)])
        bids_at: dict[int, list[tuple[int, int, int]]] = {}
        for tick in range(cfg.seconds + 1200):
            now = DAY_START + tick
            self.deliver(now)
            if tick == int(cfg.crash_at) and cfg.crash_bidder < n_b:
                self.gates[cfg.crash_bidder] = None  # reservations and ledger lost
                crashed = True
            if crashed and tick == int(cfg.crash_at + cfg.down_for):
                self.gates[cfg.crash_bidder] = Gate(
                    f"bidder-{cfg.crash_bidder}b", self.gate_settings
                )
                crashed = False
            if self.pacer is not None and tick % cfg.report_every == 0:
                live = [(b, g) for b, g in self.gates.items() if g is not None]
                for b, g in live:  # eligible opportunities, counted as the gate is told
                    for ci, n in enumerate(seen[:, b].tolist()):
                        if n:
                            g.count_opportunities(ids[ci], n)
                seen[:] = 0
                for _, g in live:
                    g.expire(now)
                    self.pacer.report(g.report(now), now)
                if tick % int(self.pacer.settings.interval) == 0:
                    spend = {ids[i]: Spend(self.committed[i], 0) for i in range(n_c)}
                    rnd = self.pacer.step(now, budgets, spend, now)
                    for _, g in live:
                        g.install(rnd.state, rnd.leases.get(g.holder))
                    for i in range(n_c):
                        cp = rnd.state.campaigns.get(ids[i])
                        throttle[i] = cp.throttle if cp is not None else 0.0
            elif tick % 2 == 0:
                self.naive_read = list(self.committed)
            if tick >= cfg.seconds:
                continue  # the day is over: only notices from here
            if tick % block == 0:
                end = min(cfg.seconds, tick + block)
                lam = rates[None, :, :] * cycles[tick:end, None, None]
                opps = self.np.poisson(lam)
                passing = self.np.binomial(opps, throttle[None, :, None]) if self.paced else opps
                ts, rows, cols = np.nonzero(passing)
                bids_at = {}
                for t, ci, b, n_pass in zip(
                    ts.tolist(),
                    rows.tolist(),
                    cols.tolist(),
                    passing[ts, rows, cols].tolist(),
                    strict=True,
                ):
                    bids_at.setdefault(t, []).append((ci, b, n_pass))
                self._opps = opps
            seen += self._opps[tick % block]
            for ci, b, n_pass in bids_at.get(tick % block, ()):
                self.bid(ci, b, n_pass, now, prices, ids)

    def bid(
        self, ci: int, b: int, passing: int, now: float, prices: list[int], ids: list[int]
    ) -> None:
        c = self.campaigns[ci]
        gate = self.gates.get(b)
        if gate is None:
            return
        price = prices[ci]
        cid = ids[ci]
        if self.paced:
            for k in range(passing):
                why = gate.check(cid, price, c.p_pred, now, 0.0)
                if why:
                    if why in ("allowance", "exposure"):
                        self.refused += passing - k
                        gate.count_blocked(cid, int(worst_cost(price) * c.p_pred * (passing - k)))
                    return
                txid = f"{now:.0f}:{cid}:{b}:{k}"
                gate.reserve(txid, cid, price, c.p_pred, now)
                self.bids += 1
                self.first_second_bids += int(now - DAY_START) % self.interval == 0
                c.last_bid = now
                self.outcome(now, b, txid, ci, c)
        else:
            cost = price // 1000
            for k in range(passing):
                if self.naive_read[ci] + cost > c.budget.daily_budget:
                    return
                txid = f"{now:.0f}:{cid}:{b}:{k}"
                self.bids += 1
                self.first_second_bids += int(now - DAY_START) % self.interval == 0
                c.last_bid = now
                self.outcome(now, b, txid, ci, c)

    def result(self, name: str) -> Result:
        over, util, within, ape, caps = [], [], [], [], []
        for c, profile in zip(self.campaigns, self.profiles, strict=True):
            budget = c.budget.daily_budget
            spent = c.billed
            over.append(max(0, spent - budget) / budget)
            if c.ratio >= 1.5:
                util.append(min(spent, budget) / budget)
                if c.mode == "even":
                    pacer = self.pacer or Pacer()
                    if self.pacer is None:
                        pacer.set_profile(c.budget.campaign_id, profile)
                    plan = pacer.plan(c.budget, DAY, 0)
                    for h in range(24):
                        planned = plan.hourly[h]
                        if planned <= 0:
                            continue
                        err = abs(c.won_by_hour[h] - planned) / planned
                        ape.append(err)
                        within.append(err <= 0.2)
            if c.cap_at is not None:
                caps.append(max(0.0, c.last_bid - c.cap_at))
        return Result(
            name,
            over,
            util,
            sum(within) / max(1, len(within)),
            sum(ape) / max(1, len(ape)),
            caps,
            self.bids,
            self.refused / max(1, self.refused + self.bids),
            self.first_second_bids / max(1, self.bids),
        )


def simulate(cfg: SimConfig, controller: Controller | None, name: str) -> Result:
    sim = _Sim(cfg, controller)
    sim.run()
    return sim.result(name)


class NoThrottle:
    """The controller off: the throttle stays at 1, the leases alone pace."""

    def step(self, state: ThrottleState, planned: int, actual: int) -> ThrottleState:
        del state, planned, actual
        return ThrottleState(1.0)


CONTROLLERS: dict[str, Controller | None] = {
    "pacer (throttle + leases)": MultiplicativeThrottle(),
    "leases only (no throttle)": NoThrottle(),
    "pacer (PI throttle)": PIThrottle(),
    "naive (asap, recorded)": None,
}
DEFAULT_RUNS = ("pacer (throttle + leases)", "leases only (no throttle)", "naive (asap, recorded)")


def _run(args: tuple[SimConfig, str]) -> Result:
    cfg, which = args
    return simulate(cfg, CONTROLLERS[which], which)


def main() -> None:
    cfg = SimConfig()
    print(
        f"pacing: {cfg.bidders} bidders, {cfg.campaigns} campaigns (budgets "
        f"{cfg.min_budget / 1e6:,.0f}-{cfg.max_budget / 1e6:,.0f}), one day, "
        f"{cfg.forecast_error:.0%} forecast error, billing within {cfg.max_billing_delay:.0f} s, "
        f"bidder {cfg.crash_bidder} crashes at {cfg.crash_at / 3600:.0f}:00"
    )
    runs = list(CONTROLLERS) if "--pi" in sys.argv[1:] else list(DEFAULT_RUNS)
    # The runs are independent and seeded alike (the same day, traffic and notices): one
    # process each, on whatever cores there are.
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    print(Result.HEADER)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        for result in pool.map(_run, [(cfg, name) for name in runs]):
            print(result.line(), flush=True)
    print(
        "aims: overdelivery median <= 0.1 %, max <= 1 %; utilisation >= 98 %; >= 90 % of hours"
        " within +-20 %; last bid within 10 s of the cap.\n"
        "refused: the share of bids the throttle let through that an allowance refused (small"
        " campaigns get their allowance one impression at a time, to one bidder at a time);\n"
        "1st s: the share of bids in the first second of a 5 s lease interval (20 % is even)"
    )


if __name__ == "__main__":
    main()
