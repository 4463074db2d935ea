"""In-flight spend of one bidder process: its reservations, and what it has used of its leases.

After the internal auction each bid reserves its expected cost ``e = E(clearing price | bid) x
P(win | bid)`` (per impression, integer micros, rounded up) and its worst case ``w`` (the bid
price per impression: the exchange never charges more than the bid). What follows moves it:

    bid ──win──▶ won (the actual cost, until billed) ──billing──▶ billed (until committed spend
     │                                                             surely includes it) ──▶ gone
     ├──loss──▶ gone
     └──no notice within ``win_ttl``──▶ gone (most losses are never notified)

- ``used``: per campaign and day, what this process has charged against its leases: every
  reservation's ``e``, plus ``actual - e`` when a win costs more than expected. It only grows,
  so the pacer's view of it (a report) is never above the truth, and ``grant - reported used``
  bounds what the process may still reserve.
- ``exposure``: per campaign, the sum of ``w - e`` over bids not yet resolved: how far the actual
  spend of those bids may exceed their reservations. A lease caps it.
- ``pending``: per campaign, the money the pacer must count on top of committed spend: ``e`` of
  unresolved bids, the actual cost of won impressions not yet billed, and billed ones until
  committed spend surely holds them: :meth:`Ledger.settle` releases those billed before the
  pacer's last read of committed spend began (the tracker publishes a billing only once it
  is in ``campaign_spend``), and ``commit_lag`` seconds release them at the latest (no pacing
  state: a billing is counted twice for a while rather than not at all).

Notices are idempotent: a duplicate, or one for a transaction this process never reserved (an
answer that went out late reserves nothing), changes nothing but a counter. A win that comes
after its reservation expired is reserved again at its actual cost (it will be billed).

Pure: time is an argument; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Final

BID: Final = 0
WON: Final = 1
BILLED: Final = 2


@dataclass(slots=True)
class Reservation:
    txid: str
    campaign_id: int
    day: int  # the lease day (an ordinal the caller chooses: the campaign's local day)
    expected: int  # e, micros
    worst: int  # w, micros
    state: int  # BID, WON, BILLED
    amount: int  # what ``pending`` counts for it now
    expires_at: float


@dataclass(slots=True)
class LedgerCounts:
    reserved: int = 0
    won: int = 0
    lost: int = 0
    billed: int = 0
    expired: int = 0
    duplicates: int = 0  # notices for a transaction already past that state
    unknown: int = 0  # notices for transactions never reserved here (or long gone)
    late_wins: int = 0  # wins after their reservation expired


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    win_ttl: float = 60.0  # a bid without a notice for this long is taken as lost
    billing_ttl: float = 900.0  # a won impression is billed within this (else: released)
    commit_lag: float = 30.0  # a billed one stays pending this long (committed spend catches up)
    remember: float = 3600.0  # how long finished transactions are remembered (duplicates)

    def __post_init__(self) -> None:
        if min(self.win_ttl, self.billing_ttl, self.commit_lag, self.remember) <= 0:
            raise ValueError("ledger lifetimes must be greater than 0")


def expected_cost(cost_micros: int, p_win: float) -> int:
    """``e`` for a bid whose expected cost if won is ``cost_micros``, rounded up (never 0 for a
    bid that can cost something). A probability that is not one (NaN, negative) counts as 1."""
    if cost_micros <= 0:
        return 0
    p = min(p_win, 1.0) if p_win >= 0.0 else 1.0
    return max(1, min(cost_micros, -int(-cost_micros * p // 1)))


class Ledger:
    """One process's reservations; see the module doc."""

    def __init__(self, settings: LedgerSettings = LedgerSettings()) -> None:
        self.settings = settings
        self._open: dict[str, Reservation] = {}
        # finished txid -> (forget after, campaign, day, a win may still come)
        self._done: dict[str, tuple[float, int, int, bool]] = {}
        self._heap: list[tuple[float, str]] = []  # (expiry, txid), lazily cleaned
        # Per campaign: pending and exposure now; ``used`` of the latest lease day charged.
        self.pending_by_campaign: dict[int, int] = {}
        self._exposure: dict[int, int] = {}
        self.used_by_campaign: dict[int, int] = {}
        self.day_by_campaign: dict[int, int] = {}
        self.counts = LedgerCounts()
        # Per campaign: billed transactions in the order of their billing (now, txid).
        self._billed: dict[int, deque[tuple[float, str]]] = {}

    def _charge(self, campaign_id: int, day: int, amount: int) -> None:
        """Add to ``used`` of ``day``; a charge for a day older than the latest is dropped
        (that day's leases are over), a newer day starts from 0."""
        current = self.day_by_campaign.get(campaign_id)
        if current is None or day > current:
            self.day_by_campaign[campaign_id] = day
            self.used_by_campaign[campaign_id] = amount
        elif day == current:
            self.used_by_campaign[campaign_id] += amount

    def _add(self, campaign_id: int, pending: int, exposure: int) -> None:
        p = self.pending_by_campaign
        p[campaign_id] = p.get(campaign_id, 0) + pending
        if exposure:
            e = self._exposure
            e[campaign_id] = e.get(campaign_id, 0) + exposure

    # -- what the gate reads ----------------------------------------------------------------
    def used(self, campaign_id: int, day: int) -> int:
        if self.day_by_campaign.get(campaign_id) != day:
            return 0
        return self.used_by_campaign[campaign_id]

    def exposure(self, campaign_id: int) -> int:
        return self._exposure.get(campaign_id, 0)

    def holds(self, txid: str) -> bool:
        """Whether the transaction is reserved here now (bid, won or recently billed)."""
        return txid in self._open

    def billed_campaigns(self) -> list[int]:
        """Campaigns with billed transactions still pending."""
        return list(self._billed)

    def pending(self, campaign_id: int) -> int:
        return self.pending_by_campaign.get(campaign_id, 0)

    def __len__(self) -> int:
        return len(self._open)

    # -- transitions --------------------------------------------------------------------------
    def reserve(
        self, txid: str, campaign_id: int, day: int, expected: int, worst: int, now: float
    ) -> bool:
        """Reserve a bid that went out. False (nothing reserved) for a txid already known."""
        if txid in self._open or txid in self._done:
            self.counts.duplicates += 1
            return False
        if expected < 0 or worst < expected:
            raise ValueError("a reservation needs 0 <= expected <= worst")
        r = Reservation(
            txid, campaign_id, day, expected, worst, BID, expected, now + self.settings.win_ttl
        )
        self._open[txid] = r
        heapq.heappush(self._heap, (r.expires_at, txid))
        self._add(campaign_id, expected, worst - expected)
        self._charge(campaign_id, day, expected)
        self.counts.reserved += 1
        return True

    def win(self, txid: str, cost: int, now: float) -> None:
        """The win notice: the reservation becomes the actual ``cost`` (per impression)."""
        r = self._open.get(txid)
        if r is None:
            done = self._done.get(txid)
            if done is not None and done[3]:
                # It expired unnotified, or a loss was reported: it will be billed after all.
                del self._done[txid]
                self.counts.late_wins += 1
                self._reopen_won(txid, done[1], done[2], cost, now)
            else:
                self._note_missing(txid)
            return
        if r.state != BID:
            self.counts.duplicates += 1
            return
        self._add(r.campaign_id, cost - r.amount, r.expected - r.worst)
        if cost > r.expected:  # charge the surprise against the lease
            self._charge(r.campaign_id, r.day, cost - r.expected)
        r.state, r.amount = WON, cost
        r.expires_at = now + self.settings.billing_ttl
        heapq.heappush(self._heap, (r.expires_at, txid))
        self.counts.won += 1

    def _reopen_won(self, txid: str, campaign_id: int, day: int, cost: int, now: float) -> None:
        r = Reservation(
            txid, campaign_id, day, cost, cost, WON, cost, now + self.settings.billing_ttl
        )
        self._open[txid] = r
        heapq.heappush(self._heap, (r.expires_at, txid))
        self._add(campaign_id, cost, 0)
        self._charge(campaign_id, day, cost)

    def loss(self, txid: str, now: float) -> None:
        r = self._open.get(txid)
        if r is None:
            self._note_missing(txid)
            return
        if r.state != BID:
            self.counts.duplicates += 1  # a loss after a win: the win stands
            return
        self._close(r, now)
        self.counts.lost += 1

    def billing(self, txid: str, cost: int, now: float) -> None:
        """The billing notice: the spend is committed (the tracker wrote it); keep counting it
        for ``commit_lag`` seconds. A billing without a win notice is a win and a billing."""
        r = self._open.get(txid)
        if r is None:
            done = self._done.get(txid)
            if done is not None and done[3]:  # billed after it expired: count it for a while
                del self._done[txid]
                self.counts.late_wins += 1
                self._reopen_won(txid, done[1], done[2], cost, now)
                r = self._open[txid]
            else:
                self._note_missing(txid)
                return
        if r.state == BILLED:
            self.counts.duplicates += 1
            return
        if r.state == BID:
            self._add(r.campaign_id, 0, r.expected - r.worst)
            if cost > r.expected:
                self._charge(r.campaign_id, r.day, cost - r.expected)
            self.counts.won += 1
        self._add(r.campaign_id, cost - r.amount, 0)
        r.state, r.amount = BILLED, cost
        r.expires_at = now + self.settings.commit_lag
        heapq.heappush(self._heap, (r.expires_at, txid))
        billed = self._billed.get(r.campaign_id)
        if billed is None:
            billed = self._billed[r.campaign_id] = deque()
        billed.append((now, txid))
        self.counts.billed += 1

    def settle(self, campaign_id: int, before: float, now: float) -> int:
        """Release the campaign's billed transactions billed before ``before``: a read of
        committed spend that began then holds them. Returns how many. (Billing times come in
        order; one out of order stops the walk early: it is released later, never early.)"""
        billed = self._billed.get(campaign_id)
        n = 0
        while billed and billed[0][0] < before:
            _, txid = billed.popleft()
            r = self._open.get(txid)
            if r is not None and r.state == BILLED:
                self._close(r, now)
                n += 1
        return n

    def _note_missing(self, txid: str) -> None:
        if txid in self._done:
            self.counts.duplicates += 1
        else:
            self.counts.unknown += 1

    def _close(self, r: Reservation, now: float) -> None:
        self._add(r.campaign_id, -r.amount, r.expected - r.worst if r.state == BID else 0)
        del self._open[r.txid]
        reopen = r.state == BID  # lost or expired unnotified: a late win is still possible
        self._done[r.txid] = (now + self.settings.remember, r.campaign_id, r.day, reopen)

    def expire(self, now: float) -> int:
        """Release what is past its time; forget finished transactions past ``remember``.
        Returns how many reservations expired."""
        n = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, txid = heapq.heappop(heap)
            r = self._open.get(txid)
            if r is None or r.expires_at != at:
                continue  # moved on since (a newer entry exists) or finished
            if r.state != BILLED:
                n += 1
            self._close(r, now)
        self.counts.expired += n
        for cid, billed in list(self._billed.items()):  # drop what expiry released already
            while billed and billed[0][1] not in self._open:
                billed.popleft()
            if not billed:
                del self._billed[cid]
        if len(self._done) > 4 * max(1024, len(self._open)):
            self._done = {k: v for k, v in self._done.items() if v[0] > now}
        return n
