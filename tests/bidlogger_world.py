"""Synthetic transactions for the bid-logger tests, with their expected aggregates counted
independently of bidlogger's code (plain loops over the events made here)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from fleet.events import (
    AnyEvent,
    AuctionEvent,
    BidEvent,
    BillingEvent,
    ClickEvent,
    ImpressionEvent,
    InAppEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
    event_type,
    partition_of,
)

Key = tuple[int, int, int, str]  # minute, campaign, creative, type


@dataclass
class Expected:
    events: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    spend: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    p_click_e9: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    joined: dict[Key, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, event: AnyEvent) -> None:
        minute = int(event.ts) // 60 * 60
        campaign = getattr(event, "campaign_id", 0)
        creative = getattr(event, "creative_id", 0)
        key = (minute, campaign, creative, event_type(event))
        self.events[key] += 1
        if isinstance(event, BillingEvent):
            self.spend[key] += event.cost_micros


def transaction(
    rng: random.Random, i: int, start: float, *, bidder: str = "bidder-a"
) -> list[AnyEvent]:
    """One auction's events in order: auction, bid, then win/loss and what follows a win."""
    txid = f"req-{i}:1:{bidder}"
    ts = start + rng.random() * 170.0  # spread over about three minutes
    campaign = rng.choice((1, 2, 3))
    creative = campaign * 10 + rng.choice((1, 2))
    bid_cpm = rng.randrange(500_000, 3_000_000)
    out: list[AnyEvent] = [
        AuctionEvent(txid=txid, ts=ts, bidder_id=bidder, exchange="x", imps=1, outcome="bid")
    ]
    out.append(
        BidEvent(
            txid=txid,
            ts=ts + 0.001,
            imp_id="1",
            campaign_id=campaign,
            creative_id=creative,
            bid_cpm_micros=bid_cpm,
            floor_cpm_micros=100_000,
            value_cpm_micros=bid_cpm * 2,
            p_click=round(rng.random() * 0.05, 6),
            p_install=0.001,
            auction_type=2,
            features=["os=ios", f"c={campaign}"],
        )
    )
    if rng.random() < 0.4:
        out.append(
            LossEvent(
                txid=txid,
                ts=ts + 0.2,
                campaign_id=campaign,
                creative_id=creative,
                bid_cpm_micros=bid_cpm,
                loss_reason=102,
            )
        )
        return out
    clear = bid_cpm - rng.randrange(0, 400_000)
    later = ts + 0.3
    out.append(
        WinEvent(
            txid=txid,
            ts=later,
            campaign_id=campaign,
            creative_id=creative,
            bid_cpm_micros=bid_cpm,
            clear_cpm_micros=clear,
        )
    )
    out.append(
        BillingEvent(
            txid=txid,
            ts=later + 0.1,
            campaign_id=campaign,
            creative_id=creative,
            clear_cpm_micros=clear,
            cost_micros=clear // 1000,
        )
    )
    out.append(
        ImpressionEvent(txid=txid, ts=later + 0.5, campaign_id=campaign, creative_id=creative)
    )
    if rng.random() < 0.2:
        out.append(ClickEvent(txid=txid, ts=later + 3, campaign_id=campaign, creative_id=creative))
        if rng.random() < 0.5:
            out.append(
                InstallEvent(txid=txid, ts=later + 30, campaign_id=campaign, creative_id=creative)
            )
            out.append(
                InAppEvent(
                    txid=txid,
                    ts=later + 60,
                    campaign_id=campaign,
                    creative_id=creative,
                    name="purchase",
                    revenue_micros=1_990_000,
                )
            )
    return out


def world(
    n: int, *, seed: int = 7, start: float = 1_796_000_000.0, bidder: str = "bidder-a"
) -> list[list[AnyEvent]]:
    rng = random.Random(seed)
    return [transaction(rng, i, start, bidder=bidder) for i in range(n)]


def expected(
    transactions: list[list[AnyEvent]], partitions: set[int] | None = None, total: int = 64
) -> Expected:
    """What a logger holding ``partitions`` (all when None) must count, p_click joins included."""
    exp = Expected()
    for tx in transactions:
        if partitions is not None and partition_of(tx[0].txid, total) not in partitions:
            continue
        p_e9 = None
        for event in tx:
            exp.add(event)
            if isinstance(event, BidEvent):
                p_e9 = round(event.p_click * 1_000_000_000)
            if isinstance(event, ImpressionEvent) and p_e9 is not None:
                minute = int(event.ts) // 60 * 60
                key = (minute, event.campaign_id, event.creative_id, "impression")
                exp.p_click_e9[key] += p_e9
                exp.joined[key] += 1
    return exp
