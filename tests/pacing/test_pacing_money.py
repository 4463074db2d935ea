"""Money invariants under adversarial interleavings (hypothesis).

1. The outstanding allowances never exceed the remaining budget: after a lease round, the
   unused allowance of every counted lease is at most budget - committed - pending (unless it
   already was above it before the round, when the round adds nothing).
2. Committed spend never exceeds the budget by more than the documented bound
   (pacing.gate.leases): the sum over holders of the largest exposure each was granted, plus
   the cost of transactions whose accounting lapsed before they were committed (notices later
   than every window). Bids, wins at any price up to the bid, losses, duplicate and late
   notices, billing at any time, lease expiries (time jumps without renewal) and bidder crashes
   and restarts come in any order; at the end every bid without an outcome wins at its full
   price and is billed: the worst case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pacing.allocation import allocate_all
from pacing.gate import Gate, GateSettings, HolderView, LedgerSettings, allocate
from pacing.pacer import CampaignBudget, Pacer, PacerSettings, Spend

T0 = 1_765_065_600.0 + 3600  # 2025-12-07 01:00 UTC: a whole day ahead
LEDGER = LedgerSettings(win_ttl=60.0, billing_ttl=900.0, commit_lag=30.0)
PACER = PacerSettings(interval=5.0, lease_ttl=15.0, holder_ttl=10.0, pending_ttl=960.0)

holder_views = st.builds(
    HolderView,
    holder=st.uuids().map(str),
    grant=st.integers(0, 10**9),
    used=st.integers(0, 10**9),
    pending=st.integers(0, 10**8),
    weight=st.floats(0, 1e6),
    lease_live=st.booleans(),
    alive=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    budget=st.integers(0, 10**10),
    committed=st.integers(0, 10**10),
    target=st.integers(0, 2 * 10**10),
    holders=st.lists(holder_views, max_size=8, unique_by=lambda h: h.holder),
    chunk=st.integers(1, 10**7),
    exposure_fraction=st.floats(0, 0.05),
)
def test_allowances_never_exceed_the_remaining_budget(
    budget: int,
    committed: int,
    target: int,
    holders: list[HolderView],
    chunk: int,
    exposure_fraction: float,
) -> None:
    a = allocate(
        budget,
        committed,
        target,
        holders,
        chunk=chunk,
        worst_imp=chunk,
        exposure_fraction=exposure_fraction,
    )
    remaining = budget - committed - sum(h.pending for h in holders)
    before = sum(max(0, h.grant - h.used) for h in holders if h.lease_live or not h.alive)
    after = sum(a.grants[h.holder] - h.used for h in holders if h.alive) + sum(
        max(0, h.grant - h.used) for h in holders if not h.alive
    )
    assert a.granted >= 0
    assert a.granted <= max(0, remaining - before)
    if before <= remaining:
        assert after <= max(remaining, 0) or a.granted == 0
        assert after <= max(remaining, before)
    for h in holders:
        if h.alive:  # never below what it reported used (it could not spend a negative)
            assert a.grants[h.holder] >= h.used
            assert a.exposures[h.holder] >= chunk

    # The vectorised rule the pacer runs gives the same integers.
    if holders:
        v = allocate_all(
            np.array([budget], np.int64),
            np.array([committed], np.int64),
            np.array([target], np.int64),
            np.array([[h.grant for h in holders]], np.int64),
            np.array([[h.used for h in holders]], np.int64),
            np.array([[h.pending for h in holders]], np.int64),
            np.array([[h.weight for h in holders]], np.float64),
            np.array([[h.lease_live for h in holders]], bool),
            np.array([h.alive for h in holders], bool),
            np.array([chunk], np.int64),
            np.array([chunk], np.int64),
            exposure_fraction,
        )
        assert int(v.granted[0]) == a.granted and int(v.headroom[0]) == a.headroom
        for j, h in enumerate(holders):
            if h.alive:
                assert int(v.grants[0, j]) == a.grants[h.holder]
                assert int(v.exposures[0, j]) == a.exposures[h.holder]


@dataclass
class _Bid:
    holder: str
    worst: int
    won: int | None = None  # the cost when won
    lost: bool = False  # a loss notice was delivered
    committed: bool = False
    late: bool = False


@dataclass
class _World:
    budget: int
    max_bid: int
    now: float = T0
    pacer: Pacer = field(default_factory=lambda: Pacer(PACER))
    gates: dict[int, Gate | None] = field(default_factory=dict)
    incarnation: dict[int, int] = field(default_factory=dict)
    bids: dict[str, _Bid] = field(default_factory=dict)
    committed: int = 0
    next_step: float = T0
    max_exposure: dict[str, int] = field(default_factory=dict)
    n: int = 0

    def campaign(self) -> CampaignBudget:
        return CampaignBudget(
            campaign_id=7,
            daily_budget=self.budget,
            total_budget=0,
            max_bid_cpm=self.max_bid,
            pacing_mode="asap",
        )

    def live_gates(self) -> list[Gate]:
        return [g for g in self.gates.values() if g is not None]

    def mark_lapsed(self) -> None:
        known = set(self.pacer.holders)
        holders = {g.holder: g for g in self.live_gates()}
        for txid, b in self.bids.items():
            if b.won is None or b.committed or b.late:
                continue
            g = holders.get(b.holder)
            if (g is not None and not g.ledger.holds(txid)) or (
                g is None and b.holder not in known
            ):
                b.late = True

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.next_step <= end:
            self.now = self.next_step
            self.step()
            self.next_step += PACER.interval
        self.now = end
        for g in self.live_gates():
            g.expire(self.now)

    def step(self) -> None:
        for g in self.live_gates():
            g.expire(self.now)
        self.mark_lapsed()
        for g in self.live_gates():
            self.pacer.report(g.report(self.now), self.now)
        rnd = self.pacer.step(self.now, [self.campaign()], {7: Spend(self.committed, 0)}, self.now)
        for name, hl in rnd.leases.items():
            for e in hl.exposures:
                self.max_exposure[name] = max(self.max_exposure.get(name, 0), e)
        for g in self.live_gates():
            g.install(rnd.state, rnd.leases.get(g.holder))

    def gate_of(self, b: _Bid) -> Gate | None:
        for g in self.live_gates():
            if g.holder == b.holder:
                return g
        return None

    def commit(self, txid: str, b: _Bid) -> None:
        if not b.committed and b.won is not None:
            self.mark_lapsed()
            b.committed = True
            self.committed += b.won


ops = st.lists(
    st.one_of(
        st.tuples(st.just("bid"), st.integers(0, 2), st.floats(0.01, 1.0), st.floats(0.0, 1.0)),
        st.tuples(st.just("bids"), st.integers(0, 2), st.integers(1, 40), st.floats(0.0, 1.0)),
        st.tuples(st.just("win"), st.integers(0, 10**6), st.floats(0.0, 1.0), st.booleans()),
        st.tuples(st.just("loss"), st.integers(0, 10**6), st.booleans(), st.booleans()),
        st.tuples(st.just("bill"), st.integers(0, 10**6), st.booleans(), st.booleans()),
        st.tuples(st.just("advance"), st.floats(0.1, 400.0), st.booleans(), st.booleans()),
        st.tuples(st.just("crash"), st.integers(0, 2), st.booleans(), st.booleans()),
        st.tuples(st.just("restart"), st.integers(0, 2), st.booleans(), st.booleans()),
    ),
    max_size=80,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.integers(5_000, 50_000_000), max_bid=st.integers(1_000, 20_000_000), script=ops)
def test_committed_spend_stays_within_the_documented_bound(
    budget: int, max_bid: int, script: list[tuple[object, ...]]
) -> None:
    w = _World(budget, max_bid)
    for i in range(3):
        w.gates[i] = Gate(f"h{i}", GateSettings(ledger=LEDGER))
        w.incarnation[i] = 0
    w.advance(0.0)
    for op in script:
        kind = op[0]
        if kind in ("bid", "bids"):
            g = w.gates[int(op[1])]  # type: ignore[call-overload]
            if g is None:
                continue
            count = 1 if kind == "bid" else int(op[2])  # type: ignore[call-overload]
            frac = float(op[2]) if kind == "bid" else 1.0  # type: ignore[arg-type]
            price = max(1_000, int(max_bid * frac))
            p_win = float(op[3])  # type: ignore[arg-type]
            for _ in range(count):
                if g.check(7, price, p_win, w.now, 0.0):
                    break
                txid = f"t{w.n}"
                w.n += 1
                assert g.reserve(txid, 7, price, p_win, w.now)
                w.bids[txid] = _Bid(g.holder, price // 1000)
            continue
        if kind in ("win", "loss", "bill"):
            if not w.bids:
                continue
            txids = list(w.bids)
            txid = txids[int(op[1]) % len(txids)]  # type: ignore[call-overload]
            b = w.bids[txid]
            g = w.gate_of(b)
            if kind == "win":
                if b.lost:
                    continue
                if b.won is None:
                    b.won = int(b.worst * float(op[2]))  # type: ignore[arg-type]
                if g is not None and op[3]:  # the notice may never come
                    g.win(txid, b.won, w.now)
            elif kind == "loss":
                if b.won is not None:
                    continue
                b.lost = True
                if g is not None and op[2]:
                    g.loss(txid, w.now)
            else:
                if b.won is None:
                    continue
                w.commit(txid, b)  # the tracker: exactly once, duplicates or not
                if g is not None and op[2]:
                    g.billing(txid, b.won, w.now)
                    if op[3]:
                        g.billing(txid, b.won, w.now)  # a duplicate notice
            continue
        if kind == "advance":
            w.advance(float(op[1]))  # type: ignore[arg-type]
        elif kind == "crash":
            w.gates[int(op[1])] = None  # type: ignore[call-overload]
        elif kind == "restart":
            i = int(op[1])  # type: ignore[call-overload]
            if w.gates[i] is None:
                w.incarnation[i] += 1
                w.gates[i] = Gate(f"h{i}.{w.incarnation[i]}", GateSettings(ledger=LEDGER))
    # The worst case: everything without an outcome wins at its full price and is billed.
    w.mark_lapsed()
    for txid, b in w.bids.items():
        if b.won is None and not b.lost:
            b.won = b.worst
        w.commit(txid, b)
    late = sum(b.won or 0 for b in w.bids.values() if b.late)
    bound = sum(w.max_exposure.values()) + late
    assert w.committed <= budget + bound, (w.committed, budget, bound, late)
