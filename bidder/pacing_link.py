"""The bidder's side of pacing: the ``pacing.gate.Gate`` of this process, fed and reported.

    link = PacingLink(holder, floor, rng=rng)        # floor: the recorded-spend BudgetGate
    cache.register(pacing_namespace(holder))         # before the cache starts
    pipeline = Pipeline(..., gate=link, ...)          # link.allow is the SpendGate
    await link.start(cache, fleet, report_interval, clock=fleet_clock.now)
    link.sent(answer, now)                            # as it went out: count and reserve
    await link.close()

``allow`` answers the pipeline's question for one priced candidate, with no side effect but
the counters: a campaign with neither a daily nor a total budget is never paced (the floor
alone answers, and lets it bid); any other first passes the recorded-spend floor (fail closed,
as before pacing), then ``Gate.check`` at the bid's expected cost: the price times the P(win)
the market model gave it (the pipeline asks once the bid is priced, before the internal
auction). That is what the bid will reserve once it has gone out (its bid event carries the
same P(win)), so an allowance holds as many bids as it will be charged for; a P(win) the model
gets wrong moves money only within the exposure cap, which the check tests too (a bid's excess
``worst - expected`` must fit it), so the overdelivery bound of ``pacing.gate.leases`` holds
whatever the model says. Checking at P(win) = 1 instead held every allowance to its
worst-case impressions: a campaign winning one bid in five spent a fifth of its plan.

The background task, on the fleet clock: every ``INSTALL_INTERVAL`` it installs the pacing
state and this holder's leases from the cache's L1 (the pacer ``put``s them; the coherence bus
brings them here); every second it expires reservations past their time; every
``report_interval`` it publishes ``encode_report(gate.report(now))`` on ``co.pacing.report``
with the holder as publisher id. It follows this process's own transactions (txids end with
``:<holder>``) among the win, loss and billing events on the event bus.

``sent`` counts an answer's eligible opportunities (``Answer.opportunities``: each imp's
candidate campaign ids, an int64 array) with ``Gate.count_opportunity_ids``, an array at a
time: they are not on the auction event any more (thousands of ids a request at 20,000
campaigns, which no one downstream read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import msgspec

from bidder.outcome import Answer
from fleet.aio import cancel_and_wait
from fleet.config import Campaign
from fleet.events import (
    AnyEvent,
    BidEvent,
    BillingEvent,
    LossEvent,
    WinEvent,
    decode,
    partition_prefix,
)
from fleet.settings import FleetSettings
from pacing.gate import (
    ALLOW,
    Gate,
    GateSettings,
    HolderLeases,
    LedgerSettings,
    PacingState,
    expected_cost,
    worst_cost,
)
from pacing.gate.namespace import (
    PACING_NAMESPACE,
    REPORT_TOPIC,
    STATE_KEY,
    encode_report,
    lease_key,
)

log = logging.getLogger("bidder.pacing")

INSTALL_INTERVAL: Final = 0.25  # seconds between installs of state and leases from L1
EXPIRE_INTERVAL: Final = 1.0
_FOLLOWED: Final = ("win", "loss", "billing")
_UNDER_THROTTLE: Final = frozenset({"allowance", "exposure"})


def count_opportunities(into: dict[int, int], candidates: Iterable[Any]) -> None:
    """Add one eligible opportunity per candidate (``candidate.entry.campaign.id``)."""
    for cand in candidates:
        cid = cand.entry.campaign.id
        into[cid] = into.get(cid, 0) + 1


def gate_settings(scale: float) -> GateSettings:
    """The gate's lifetimes in fleet seconds: the defaults are real seconds, and a fleet clock
    running ``scale`` times faster (a simulation) sees ``scale`` times as many."""
    d, ld = GateSettings(), LedgerSettings()
    return GateSettings(
        max_state_age=d.max_state_age * scale,
        ledger=LedgerSettings(
            win_ttl=ld.win_ttl * scale,
            billing_ttl=ld.billing_ttl * scale,
            commit_lag=ld.commit_lag * scale,
            remember=ld.remember * scale,
        ),
    )


class Floor(Protocol):
    """The recorded-spend gate beneath the pacing gate (``bidder.sources.BudgetGate``)."""

    @property
    def loaded(self) -> bool: ...

    def allow(self, campaign: Campaign, price_cpm_micros: int, now: float) -> bool: ...


class Peek(Protocol):
    def peek(self, namespace: str, key: str) -> Any: ...


class PacingLink:
    """A SpendGate for the pipeline that paces budgeted campaigns; see the module doc."""

    def __init__(
        self,
        holder: str,
        floor: Floor,
        *,
        rng: random.Random,
        settings: GateSettings | None = None,
    ) -> None:
        self.holder = holder
        self.floor = floor
        self.gate = Gate(holder, settings or GateSettings())
        self._rng = rng
        self._suffix = ":" + holder
        self.refused: dict[str, int] = {}  # candidates refused, by gate reason
        self.followed = 0  # win, loss and billing events of our own transactions applied
        self._task: asyncio.Task[None] | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._subscriber: Any = None
        self._publisher: Any = None

    @property
    def loaded(self) -> bool:
        return self.floor.loaded

    # -- the bid path -------------------------------------------------------------------------
    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        if not self.floor.allow(campaign, price_cpm_micros, now):
            return False
        if not (campaign.daily_budget_micros or campaign.total_budget_micros):
            return True
        gate = self.gate
        draw = self._rng.random()
        why = gate.check(campaign.id, price_cpm_micros, p_win, now, draw)
        if why == ALLOW:
            return True
        self.refused[why] = self.refused.get(why, 0) + 1
        if why in _UNDER_THROTTLE:
            st = gate.pacing(campaign.id)
            if st is not None and draw < st.throttle:
                gate.count_blocked(campaign.id, expected_cost(worst_cost(price_cpm_micros), p_win))
        return False

    def sent(self, answer: Answer, now: float) -> int:
        """An answer as it went out (a late one has lost its bid events, not its
        opportunities): count its eligible opportunities and reserve its bids; returns how many
        were reserved."""
        n = 0
        gate = self.gate
        for ids in answer.opportunities:
            gate.count_opportunity_ids(ids)
        for event in answer.events:
            if isinstance(event, BidEvent):
                price = event.campaign_bid_cpm_micros or event.bid_cpm_micros
                p_win = event.p_win if event.p_win > 0.0 else 1.0
                n += gate.reserve(event.txid, event.campaign_id, price, p_win, now)
        return n

    # -- feedback -----------------------------------------------------------------------------
    def follow(self, event: AnyEvent, now: float) -> bool:
        """Apply a win, loss or billing event of one of this process's transactions."""
        if not event.txid.endswith(self._suffix):
            return False
        if isinstance(event, WinEvent):
            self.gate.win(event.txid, event.clear_cpm_micros // 1000, now)
        elif isinstance(event, LossEvent):
            self.gate.loss(event.txid, now)
        elif isinstance(event, BillingEvent):
            self.gate.billing(event.txid, event.cost_micros, now)
        else:
            return False
        self.followed += 1
        return True

    def install_from(self, cache: Peek) -> None:
        state = cache.peek(PACING_NAMESPACE, STATE_KEY)
        leases = cache.peek(PACING_NAMESPACE, lease_key(self.holder))
        self.gate.install(
            state if isinstance(state, PacingState) else None,
            leases if isinstance(leases, HolderLeases) else None,
        )

    # -- the background task ------------------------------------------------------------------
    async def start(
        self,
        cache: Peek,
        fleet: FleetSettings,
        report_interval: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from fleet.bus import Publisher, Subscriber
        from fleet.errors import BusError

        partitions = fleet.event_partitions
        prefixes = [partition_prefix(p) + t for p in range(partitions) for t in _FOLLOWED]
        self._subscriber = Subscriber(fleet.event_bus_out, prefixes=prefixes)
        self._publisher = Publisher(fleet.coherence_bus_in, publisher_id=self.holder)
        try:
            await self._subscriber.start()
            await self._publisher.start()
        except BusError as exc:  # no reports, no leases: budgeted campaigns stay closed
            log.error("pacing link: bus unusable (%s); budgeted campaigns will not bid", exc)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(cache, report_interval, clock), name="pacing")
        self._follow_task = loop.create_task(self._follow(clock), name="pacing-follow")

    async def _run(self, cache: Peek, report_interval: float, clock: Callable[[], float]) -> None:
        expire_at = report_at = 0.0  # real time (monotonic); the gate is told fleet time
        while True:
            try:
                self.install_from(cache)
                now, real = clock(), time.monotonic()
                if real >= expire_at:
                    self.gate.expire(now)
                    expire_at = real + EXPIRE_INTERVAL
                if real >= report_at and self._publisher is not None:
                    self._publisher.publish(REPORT_TOPIC, encode_report(self.gate.report(now)))
                    report_at = real + report_interval
            except Exception:  # pacing must never take the bidder down; it fails closed
                log.exception("pacing link step failed")
            await asyncio.sleep(INSTALL_INTERVAL)

    async def _follow(self, clock: Callable[[], float]) -> None:
        subscriber = self._subscriber
        async for delivery in subscriber:
            if delivery.kind != "data":
                continue  # lost notices: their reservations expire
            now = clock()
            for payload in delivery.payloads:
                try:
                    self.follow(decode(payload), now)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await cancel_and_wait(self._follow_task)
        self._task = self._follow_task = None
        for part in (self._subscriber, self._publisher):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        self._subscriber = self._publisher = None


__all__ = ["Floor", "PacingLink", "count_opportunities", "gate_settings"]
