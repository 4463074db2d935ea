"""Spend leases: what the pacer grants each bidder process, and how it splits the budget.

A lease, per campaign and holder (the bidder's process name), says: through the campaign's local
``day`` this holder may charge up to ``grant`` micros of expected cost (cumulative over the day,
so a duplicated lease message is harmless and of two the newer by ``issued_at`` wins), and may
have at most ``exposure`` micros of worst-case excess (``w - e``) in unresolved bids, until
``expires_at``. Past that instant the holder stops spending on the
campaign: a pacer that cannot renew, or a holder cut off from it, ends spending (a dead-man
switch).

The allocator keeps, per campaign, with ``pending`` the sum of what holders report in flight,
won-unbilled and recently billed (see :mod:`pacing.gate.ledger`)::

    sum over live leases of (grant - reported used)  <=  budget - committed - pending

Reported ``used`` never exceeds the truth (it only grows), so the left side bounds what holders
can still reserve: expected spend never passes the budget. Actual spend can exceed expected
spend only by the excess of unresolved bids, which the exposure caps bound; hence the
**overdelivery bound** of a campaign day:

    committed <= budget + sum over holders of the largest exposure each was granted that day
                        + the cost of transactions whose win and billing notices both came after
                          the ledger's ``win_ttl`` (late beyond every window; counted when they
                          do come)

Exposure is granted as ``exposure_fraction x budget`` split by traffic share, at least one
worst-case impression (``max bid / 1000``) per holder that bids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """One holder's spend lease on one campaign (see the module doc)."""

    campaign_id: int
    day: int  # the campaign's local day, as date.toordinal()
    grant: int  # cumulative micros of expected cost the holder may charge this day
    exposure: int  # cap on the sum of (worst - expected) over its unresolved bids
    expires_at: float  # epoch seconds: no spending past it
    issued_at: float


class HolderLeases(msgspec.Struct, frozen=True, kw_only=True, tag="leases"):
    """Everything one holder was granted in one allocation round, column by column (compact
    on the wire, and built without a Python object per lease)."""

    holder: str
    issued_at: float
    campaign_ids: list[int] = msgspec.field(default_factory=list)
    days: list[int] = msgspec.field(default_factory=list)
    grants: list[int] = msgspec.field(default_factory=list)
    exposures: list[int] = msgspec.field(default_factory=list)
    expires_at: list[float] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.campaign_ids)
        columns = (self.days, self.grants, self.exposures, self.expires_at)
        if any(len(column) != n for column in columns):
            raise ValueError("lease columns differ in length")

    def lease(self, campaign_id: int) -> Lease | None:
        try:
            i = self.campaign_ids.index(campaign_id)
        except ValueError:
            return None
        return Lease(
            campaign_id=campaign_id,
            day=self.days[i],
            grant=self.grants[i],
            exposure=self.exposures[i],
            expires_at=self.expires_at[i],
            issued_at=self.issued_at,
        )

    def table(self) -> dict[int, tuple[int, int, int, float]]:
        """campaign id -> (day, grant, exposure, expires_at), as the gate looks leases up."""
        return dict(
            zip(
                self.campaign_ids,
                zip(self.days, self.grants, self.exposures, self.expires_at, strict=True),
                strict=True,
            )
        )


class CampaignPacing(msgspec.Struct, frozen=True, kw_only=True):
    """The pacing state of one campaign, for every bidder: controller output and the figures
    the fail-closed floor checks."""

    campaign_id: int
    day: int
    day_end: float  # epoch seconds: the day's leases end here at the latest
    budget: int  # the day's budget (daily, within what the total leaves)
    committed: int  # recorded spend today (campaign_spend) when the pacer last read it
    committed_at: float  # when it was read
    planned: int  # the plan's cumulative target now
    throttle: float


class PacingState(msgspec.Struct, frozen=True, kw_only=True, tag="state"):
    issued_at: float
    campaigns: dict[int, CampaignPacing] = msgspec.field(default_factory=dict)
    # the most host clocks may differ (the pacer's setting): a billing this much before a read
    # of committed spend may still have missed it
    clock_skew: float = 0.0


class HolderReport(msgspec.Struct, frozen=True, kw_only=True, tag="report"):
    """What a bidder process tells the pacer, per campaign: used (this day's leases), pending,
    and since its last report the eligible opportunities seen (its traffic share) and the
    expected cost of bids its allowance refused."""

    holder: str
    sent_at: float
    used: dict[int, int] = msgspec.field(default_factory=dict)
    days: dict[int, int] = msgspec.field(default_factory=dict)  # the day ``used`` is of
    pending: dict[int, int] = msgspec.field(default_factory=dict)
    opportunities: dict[int, int] = msgspec.field(default_factory=dict)
    blocked: dict[int, int] = msgspec.field(default_factory=dict)  # since the last report


@dataclass(frozen=True, slots=True)
class HolderView:
    """The pacer's view of one holder on one campaign."""

    holder: str
    grant: int  # its current cumulative grant today (0: none)
    used: int  # reported
    pending: int  # reported
    weight: float  # its share of the campaign's traffic (any scale; 0: unknown)
    lease_live: bool  # its current lease has not expired (with the clock-skew margin)
    alive: bool  # heard recently: may receive new grants


@dataclass(frozen=True, slots=True)
class Allocation:
    grants: dict[str, int]  # new cumulative grant per alive holder
    exposures: dict[str, int]
    pending: int
    outstanding: int  # unused allowance of live leases before this round
    headroom: int  # budget - committed - pending - outstanding (may be negative)
    granted: int  # what this round added


def _split(amount: int, weights: Sequence[float]) -> list[int]:
    """Integer shares of ``amount`` in proportion to ``weights``, rounded down."""
    total = sum(weights)
    return [int(amount * w / total) for w in weights]


def allocate(
    budget: int,
    committed: int,
    target: int,
    holders: Sequence[HolderView],
    *,
    chunk: int,
    worst_imp: int,
    exposure_fraction: float,
) -> Allocation:
    """One allocation round for one campaign (the reference; the pacer runs the same rule
    over every campaign at once in ``pacing.allocation``, and a test keeps them equal).

    ``target``: the planned cumulative spend a little ahead (the controller acts through the
    throttle, not here). ``chunk``: the smallest grant worth making to one holder (about one
    bid's cost): smaller needs wait and add up, except the budget's last micros. Grants go in
    proportion to the holders' traffic, in whole chunks; what does not make a whole chunk goes
    to the holder with the most traffic for what it already holds. ``worst_imp``: the most
    one impression may cost, the least exposure a holder gets.
    """
    chunk = max(1, chunk)
    pending = sum(h.pending for h in holders)
    # A silent holder's unused allowance counts until it is forgotten, lease or not: bids it
    # made after its last report are covered by nothing else (it may have crashed).
    outstanding = sum(max(0, h.grant - h.used) for h in holders if h.lease_live or not h.alive)
    headroom = budget - committed - pending - outstanding
    want = min(target - committed - pending - outstanding, headroom)
    if want <= 0 or want < min(chunk, headroom):
        want = 0
    alive = [h for h in holders if h.alive]
    grants: dict[str, int] = {}
    exposures: dict[str, int] = {}
    if not alive:
        return Allocation(grants, exposures, pending, outstanding, headroom, 0)
    weights = [max(h.weight, 0.0) for h in alive]
    if sum(weights) <= 0:
        weights = [1.0] * len(alive)
    total_w = sum(weights)
    shares = [math.floor(want * w / total_w / chunk) * chunk for w in weights]
    left = want - sum(shares)
    held = [max(0, h.grant - h.used) if h.lease_live else 0 for h in alive]
    priority = [weights[i] / (held[i] + shares[i] + chunk) for i in range(len(alive))]
    top = max(range(len(alive)), key=priority.__getitem__)
    shares[top] += left
    exposure_shares = _split(int(budget * exposure_fraction), weights)
    for i, h in enumerate(alive):
        base = max(h.grant, h.used) if h.lease_live else h.used
        grants[h.holder] = base + shares[i]
        exposures[h.holder] = max(exposure_shares[i], worst_imp)
    return Allocation(grants, exposures, pending, outstanding, headroom, want)
