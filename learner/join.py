"""Training examples from the event stream: a pure join by transaction id.

Two heads learn from two joins:

- click head: one example per impression, labelled 1 when a click on the same txid arrives
  within ``click_window_s`` of the impression, 0 when the window closes without one;
- install head: one example per click, labelled 1 by an install attributed to the same txid
  within ``install_window_s``, 0 when that window closes.

Every example, positive or negative, is learnt when its window closes (or when it is evicted).
Learning a positive as soon as its label arrives would put the last window's positives into the
stream ahead of their negatives: a model exported early in a run (or after a quiet spell) would
then see a click rate far above the true one.

The features are those the bid event carries (exactly what the bidder scored), so a learnt
weight means the same thing in both. Bids wait ``bid_ttl_s`` for their impression, win or loss;
wins and losses also become observations of the market price (``PriceObservation``), the
segment taken from the bid.

Time is the stream's own: the watermark is the latest event timestamp seen (``flush(now)``
moves it on when the stream is idle), so replaying a file gives the same examples as the live
stream did. A label that arrives after its window closed is counted (``late_labels``), not
learnt twice. Memory is bounded: at most ``max_bids`` bids and ``max_waiting`` examples per
head wait; past that the oldest is settled early (a waiting example as a negative, counted in
``evicted``). Negatives may be subsampled (``negative_rate``), chosen by a hash of the txid
(the same choice in every process and on every replay) and weighted 1/rate.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import mmh3

from fleet.events import (
    AnyEvent,
    BidEvent,
    ClickEvent,
    ImpressionEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
)
from learner.errors import BadParameters

Head = Literal["click", "install"]
PriceKind = Literal["exact", "below", "above"]
FIRST_PRICE: Final = 1
HEADS: Final[tuple[Head, Head]] = ("click", "install")


@dataclass(frozen=True, slots=True)
class JoinSettings:
    click_window_s: float = 1800.0
    install_window_s: float = 86_400.0
    bid_ttl_s: float = 600.0
    max_bids: int = 200_000
    max_waiting: int = 500_000
    negative_rate: float = 1.0

    def __post_init__(self) -> None:
        if min(self.click_window_s, self.install_window_s, self.bid_ttl_s) <= 0:
            raise BadParameters("join windows must be positive")
        if self.max_bids < 1 or self.max_waiting < 1:
            raise BadParameters("join bounds must be at least 1")
        if not 0 < self.negative_rate <= 1:
            raise BadParameters("negative_rate must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Example:
    head: Head
    txid: str
    features: list[str]
    label: float
    weight: float  # importance weight: 1/negative_rate for kept negatives
    ts: float  # the impression's (click head) or the click's (install head) time
    label_delay: float  # seconds from ts to the label; the window for negatives


@dataclass(frozen=True, slots=True)
class PriceObservation:
    """ln(competing price): exactly ``price`` (exact), below it (a first-price win at our bid)
    or above it (a loss at our bid)."""

    segment: str
    kind: PriceKind
    price_micros: int


@dataclass(slots=True)
class _Bid:
    features: list[str]
    bid_cpm_micros: int
    auction_type: int
    segment: str
    ts: float
    priced: bool = False


@dataclass(slots=True)
class _Waiting:
    features: list[str]
    ts: float
    label_ts: float | None = None  # when its label arrived; learnt only when the window closes


@dataclass(slots=True)
class JoinStats:
    bids: int = 0
    examples: dict[str, int] = field(default_factory=lambda: {"click": 0, "install": 0})
    positives: dict[str, int] = field(default_factory=lambda: {"click": 0, "install": 0})
    dropped_negatives: int = 0  # subsampled away
    unjoined: int = 0  # an impression, win or loss whose bid is unknown or expired
    late_labels: int = 0  # a click or install after its window (or for an unknown txid)
    duplicates: int = 0
    evicted: int = 0  # settled early because the bounds were reached
    prices: int = 0


def market_segment_of(bid: BidEvent) -> str:
    """The bidder's market segment of a bid (``bidder.pipeline.market_segment``: auction type,
    exchange, country, format), rebuilt from the bid's features: the format is the creative's
    size for banners (the imp's size, which the creative matched), else its format."""
    given = getattr(bid, "segment", "")
    if isinstance(given, str) and given:
        return given
    exchange = country = fmt = size = ""
    for f in bid.features:
        if f.startswith("exchange="):
            exchange = f[9:]
        elif f.startswith("country="):
            country = f[8:]
        elif f.startswith("fmt="):
            fmt = f[4:]
        elif f.startswith("size="):
            size = f[5:]
    if fmt == "banner":
        fmt = size if size and not size.startswith("0x") and not size.endswith("x0") else "banner"
    return f"{bid.auction_type}|{exchange}|{country}|{fmt or 'other'}"


def kept_fraction(txid: str) -> float:
    """A stable uniform number in [0, 1) per txid (MurmurHash3, seed 7)."""
    return int(mmh3.hash(txid, 7, signed=False)) / 4294967296.0


class Joiner:
    def __init__(self, settings: JoinSettings | None = None) -> None:
        self.settings = settings or JoinSettings()
        self.stats = JoinStats()
        self.watermark = -math.inf
        self._bids: OrderedDict[str, _Bid] = OrderedDict()
        self._waiting: dict[Head, OrderedDict[str, _Waiting]] = {
            "click": OrderedDict(),
            "install": OrderedDict(),
        }
        # txids already labelled positive, so that a repeated click or install is not learnt
        # twice (bounded like the waiting examples)
        self._labelled: dict[Head, OrderedDict[str, float]] = {
            "click": OrderedDict(),
            "install": OrderedDict(),
        }

    @property
    def waiting(self) -> int:
        return len(self._waiting["click"]) + len(self._waiting["install"])

    @property
    def bids_waiting(self) -> int:
        return len(self._bids)

    def feed(self, event: AnyEvent) -> tuple[list[Example], list[PriceObservation]]:
        """The examples and price observations that ``event`` settles (including examples whose
        window it closes)."""
        examples: list[Example] = []
        prices: list[PriceObservation] = []
        if isinstance(event, BidEvent):
            self._on_bid(event, examples)
        elif isinstance(event, WinEvent | LossEvent):
            self._on_price(event, prices)
        elif isinstance(event, ImpressionEvent):
            self._on_impression(event, examples)
        elif isinstance(event, ClickEvent):
            self._on_label(event, "click", examples)
        elif isinstance(event, InstallEvent):
            self._on_label(event, "install", examples)
        if event.ts > self.watermark:
            self.watermark = event.ts
            examples.extend(self._expire())
        self.stats.prices += len(prices)
        return examples, prices

    def flush(self, now: float) -> list[Example]:
        """Move the watermark to ``now`` (an idle stream) and settle what it closes."""
        if now > self.watermark:
            self.watermark = now
        return self._expire()

    def drain(self) -> list[Example]:
        """Settle every waiting example as it stands (the end of an offline file)."""
        out: list[Example] = []
        for head in HEADS:
            waiting = self._waiting[head]
            while waiting:
                txid, w = waiting.popitem(last=False)
                self._settle(head, txid, w, out)
        self._bids.clear()
        return out

    # -- checkpoints ----------------------------------------------------------------------------

    def to_state(self, row: Callable[[list[str]], int]) -> dict[str, Any]:
        """Everything that waits, as plain data (for a checkpoint); feature lists are given
        as ``row(features)``, an id in the checkpoint's table of rows."""
        return {
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "bids": [
                [t, row(b.features), b.bid_cpm_micros, b.auction_type, b.segment, b.ts, b.priced]
                for t, b in self._bids.items()
            ],
            "waiting": {
                h: [[t, row(w.features), w.ts, w.label_ts] for t, w in q.items()]
                for h, q in self._waiting.items()
            },
            "labelled": {h: [[t, ts] for t, ts in q.items()] for h, q in self._labelled.items()},
            "stats": dataclasses.asdict(self.stats),
        }

    def restore(self, state: dict[str, Any], features: Callable[[int], list[str]]) -> None:
        """The state ``to_state`` gave; ``features(id)`` turns row ids back into lists."""
        w = state["watermark"]
        self.watermark = -math.inf if w is None else float(w)
        self._bids = OrderedDict(
            (t, _Bid(features(f), int(b), int(at), str(seg), float(ts), bool(priced)))
            for t, f, b, at, seg, ts, priced in state["bids"]
        )
        for h in HEADS:
            self._waiting[h] = OrderedDict(
                (t, _Waiting(features(f), float(ts), None if rest[0] is None else float(rest[0])))
                if rest
                else (t, _Waiting(features(f), float(ts)))
                for t, f, ts, *rest in state["waiting"][h]
            )
            self._labelled[h] = OrderedDict((t, float(ts)) for t, ts in state["labelled"][h])
        self.stats = JoinStats(**state["stats"])

    # -- events -----------------------------------------------------------------------------------

    def _on_bid(self, bid: BidEvent, out: list[Example]) -> None:
        self.stats.bids += 1
        if bid.txid in self._bids:
            self.stats.duplicates += 1
            return
        self._bids[bid.txid] = _Bid(
            bid.features, bid.bid_cpm_micros, bid.auction_type, market_segment_of(bid), bid.ts
        )
        if len(self._bids) > self.settings.max_bids:
            self._bids.popitem(last=False)
            self.stats.evicted += 1

    def _on_price(self, event: WinEvent | LossEvent, out: list[PriceObservation]) -> None:
        bid = self._bids.get(event.txid)
        if bid is None:
            self.stats.unjoined += 1
            return
        if bid.priced:
            self.stats.duplicates += 1
            return
        bid.priced = True
        if isinstance(event, WinEvent):
            if bid.auction_type != FIRST_PRICE and event.clear_cpm_micros > 0:
                out.append(PriceObservation(bid.segment, "exact", event.clear_cpm_micros))
            elif bid.bid_cpm_micros > 0:
                out.append(PriceObservation(bid.segment, "below", bid.bid_cpm_micros))
        else:
            del self._bids[event.txid]  # a lost bid has no impression to wait for
            if event.clear_cpm_micros > bid.bid_cpm_micros:
                out.append(PriceObservation(bid.segment, "exact", event.clear_cpm_micros))
            elif bid.bid_cpm_micros > 0:
                out.append(PriceObservation(bid.segment, "above", bid.bid_cpm_micros))

    def _on_impression(self, imp: ImpressionEvent, out: list[Example]) -> None:
        bid = self._bids.get(imp.txid)
        if bid is None:
            self.stats.unjoined += 1
            return
        if imp.txid in self._waiting["click"] or imp.txid in self._labelled["click"]:
            self.stats.duplicates += 1
            return
        self._wait("click", imp.txid, _Waiting(bid.features, imp.ts), out)

    def _on_label(self, event: ClickEvent | InstallEvent, head: Head, out: list[Example]) -> None:
        labelled = self._labelled[head]
        if event.txid in labelled:
            self.stats.duplicates += 1
            return
        w = self._waiting[head].get(event.txid)
        if w is None and head == "click":
            # a click that overtook its impression on the bus: the impression happened
            bid = self._bids.get(event.txid)
            if bid is not None:
                w = _Waiting(bid.features, event.ts)
                self._wait(head, event.txid, w, out)
        if w is None:
            self.stats.late_labels += 1
            return
        labelled[event.txid] = event.ts
        if len(labelled) > self.settings.max_waiting:
            labelled.popitem(last=False)
        self.stats.positives[head] += 1
        w.label_ts = event.ts  # learnt as a positive when its window closes
        if head == "click":
            self._wait("install", event.txid, _Waiting(w.features, event.ts), out)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _wait(self, head: Head, txid: str, w: _Waiting, out: list[Example]) -> None:
        waiting = self._waiting[head]
        waiting[txid] = w
        if len(waiting) > self.settings.max_waiting:
            old_txid, old = waiting.popitem(last=False)
            self.stats.evicted += 1
            self._settle(head, old_txid, old, out)

    def _settle(self, head: Head, txid: str, w: _Waiting, out: list[Example]) -> None:
        """The example of a closed (or evicted) window: positive when its label came."""
        if w.label_ts is not None:
            self.stats.examples[head] += 1
            out.append(Example(head, txid, w.features, 1.0, 1.0, w.ts, w.label_ts - w.ts))
            return
        rate = self.settings.negative_rate
        if rate < 1.0 and kept_fraction(txid) >= rate:
            self.stats.dropped_negatives += 1
            return
        window = self.settings.click_window_s if head == "click" else self.settings.install_window_s
        self.stats.examples[head] += 1
        out.append(Example(head, txid, w.features, 0.0, 1.0 / rate, w.ts, window))

    def _expire(self) -> list[Example]:
        out: list[Example] = []
        now = self.watermark
        s = self.settings
        for head in HEADS:
            window = s.click_window_s if head == "click" else s.install_window_s
            waiting = self._waiting[head]
            while waiting:
                txid, w = next(iter(waiting.items()))
                if w.ts + window > now:
                    break
                del waiting[txid]
                self._settle(head, txid, w, out)
            labelled = self._labelled[head]
            while labelled:
                txid, ts = next(iter(labelled.items()))
                if ts + window > now:
                    break
                del labelled[txid]
        bids = self._bids
        while bids:
            txid, bid = next(iter(bids.items()))
            if bid.ts + s.bid_ttl_s > now:
                break
            del bids[txid]
        return out
