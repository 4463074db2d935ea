"""The pure core: events in, one batch per flush out. No sockets, no clock, no files.

Per minute (of the events' own timestamps) x campaign x creative x event type it counts events,
sums billed spend (integer micros, from billing events) and, for impressions, the predicted click
probability of the bid each one is joined to by txid (in units of 1e-9, so that sums are exact
integers). Auction events have no campaign: they count under campaign 0, creative 0.

The join holds bids for ``join_ttl`` seconds of event time and ``join_max_entries`` at most; a
bid evicted before its impression arrives leaves that impression unjoined (``joined`` counts the
joined ones, so calibration divides by it, not by the impression count).

Every batch also carries the minutes of event time the logger listened through (coverage, for
the fleet views' P/k scaling), the bus positions it consumed up to, the losses it detected, and
the raw-sample rows.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable
from typing import Any

import msgspec

from bidlogger._copy import encode_chunks
from bidlogger.positions import Loss, Position, Positions
from bidlogger.raw import RawChunk, RawRow, chunk_of, rows_of
from fleet.events import (
    EVENT_TYPES,
    AuctionEvent,
    BidEvent,
    BillingEvent,
    ClickEvent,
    Event,
    ImpressionEvent,
    InAppEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
    partition_of,
)

MINUTE = 60
HOUR = 3600
MAX_TS = 4.0e9  # events stamped past 2096 (or before 1970) are dropped as bad timestamps
MAX_COVERAGE_GAP = 24 * 60  # minutes of listening recorded at most between two flushes
P_SCALE = 1_000_000_000

CLASSES: dict[str, type[Event]] = {
    "auction": AuctionEvent,
    "bid": BidEvent,
    "win": WinEvent,
    "loss": LossEvent,
    "billing": BillingEvent,
    "impression": ImpressionEvent,
    "click": ClickEvent,
    "install": InstallEvent,
    "inapp": InAppEvent,
}
assert tuple(CLASSES) == EVENT_TYPES
DECODERS: dict[str, msgspec.msgpack.Decoder[Event]] = {
    name: msgspec.msgpack.Decoder(cls) for name, cls in CLASSES.items()
}
_WITH_CAMPAIGN = frozenset(
    name for name, cls in CLASSES.items() if "campaign_id" in cls.__struct_fields__
)
_ARRAY32 = struct.Struct(">BI")  # msgpack array32 header: the payloads behind it are one array


def _lite(name: str, extra: list[tuple[str, type]]) -> type:
    """A slim struct of one event type: the fields the aggregates read, required as in
    fleet.events, the tag still checked; the other fields are skipped unread."""
    fields: list[Any] = [("txid", str), ("ts", float)]
    if name != "auction":
        fields += [("campaign_id", int), ("creative_id", int)]
    return msgspec.defstruct(f"Lite{name.title()}", [*fields, *extra], tag_field="type", tag=name)


_EXTRA: dict[str, list[tuple[str, type]]] = {
    "bid": [("p_click", float)],
    "billing": [("cost_micros", int)],
}
LITE_DECODERS: dict[str, msgspec.msgpack.Decoder[list[Any]]] = {
    name: msgspec.msgpack.Decoder(list[_lite(name, _EXTRA.get(name, []))])  # type: ignore[misc]
    for name in CLASSES
}
FULL_DECODERS: dict[str, msgspec.msgpack.Decoder[list[Any]]] = {
    name: msgspec.msgpack.Decoder(list[cls])  # type: ignore[valid-type]
    for name, cls in CLASSES.items()
}

# drop causes (label values of bidlogger_dropped_events_total)
UNDECODABLE = "undecodable"
WRONG_PARTITION = "wrong_partition"
BAD_TIMESTAMP = "bad_timestamp"
UNKNOWN_TOPIC = "unknown_topic"


class AggRow(msgspec.Struct, array_like=True, frozen=True):
    minute: int  # epoch seconds of the minute's start
    campaign_id: int
    creative_id: int
    event_type: str
    events: int
    spend_micros: int
    p_click_e9: int
    joined: int


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """One flush: applied to Postgres at most once, identified by (logger_id, seq).

    The raw sample travels twice: ``chunks`` (``bidlogger.raw``: for the Parquet segments, in
    memory only: the spool keeps ``chunks=[]``), and ``raw_copy``, the same events as one binary
    COPY stream (``bidlogger.copyfmt``), encoded once at the flush, spooled and sent to Postgres
    as it is; ``raw_first``/``raw_last`` are its earliest and latest timestamps in epoch
    microseconds. A batch spooled before ``raw_copy`` existed has ``raw``, the rows, alone (the
    writer encodes them); so has a batch whose stream the flush could not encode (the writer
    encodes it again, and sets the batch aside as refused).
    """

    logger_id: str
    seq: int
    shard: str
    partitions_covered: int
    partitions_total: int
    events: int  # events folded into the aggregates
    rows: list[AggRow]
    coverage: list[int]  # minute starts (epoch seconds) listened through
    positions: list[Position]
    losses: list[Loss]
    raw: list[RawRow]
    raw_copy: bytes = b""
    raw_events: int = 0
    raw_first: int = 0
    raw_last: int = 0
    chunks: list[RawChunk] = []

    @property
    def raw_count(self) -> int:
        """Raw-sample events in the batch (in ``raw``, ``raw_copy`` or both)."""
        return max(self.raw_events, len(self.raw))


class BidJoin:
    """txid -> p_click (1e-9 units) of recent bids, bounded by age (event time) and count."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl > 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._bids: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self.evicted = 0  # pushed out by the size bound before their impression came
        self.expired = 0  # older than the ttl

    def __len__(self) -> int:
        return len(self._bids)

    def put(self, txid: str, p_click_e9: int, ts: float) -> None:
        bids = self._bids
        bids[txid] = (p_click_e9, ts)
        if len(bids) > self.max_entries:
            bids.popitem(last=False)
            self.evicted += 1

    def put_many(self, txids: list[str], p_click_e9: list[int], stamps: list[float]) -> None:
        """``put`` of each, in order, in one C-level update (the same bids stay, the same
        number are counted evicted)."""
        bids = self._bids
        bids.update(zip(txids, zip(p_click_e9, stamps, strict=True), strict=True))
        over = len(bids) - self.max_entries
        if over > 0:
            popitem = bids.popitem
            for _ in range(over):
                popitem(last=False)
            self.evicted += over

    def take(self, txid: str) -> int | None:
        entry = self._bids.pop(txid, None)
        return None if entry is None else entry[0]

    def expire(self, watermark: float) -> int:
        """Drop bids older than ``watermark - ttl`` (from the oldest inserted; bids arrive
        roughly in time order). Returns how many went."""
        cutoff = watermark - self.ttl
        bids = self._bids
        gone = 0
        while bids:
            txid, (_, ts) = next(iter(bids.items()))
            if ts >= cutoff:
                break
            del bids[txid]
            gone += 1
        self.expired += gone
        return gone


Cells = dict[tuple[int, int, int, str], list[int]]


class Aggregator:
    """Folds delivered batches of event payloads into per-minute cells until ``flush()``."""

    def __init__(
        self,
        *,
        logger_id: str,
        shard: str,
        partitions_covered: int,
        partitions_total: int,
        join: BidJoin,
        raw_partitions: frozenset[int],
        raw_types: frozenset[str],
        positions: Positions | None = None,
        check_partition: bool = True,
    ) -> None:
        self.logger_id = logger_id
        self.shard = shard
        self.covered = partitions_covered
        self.total = partitions_total
        self.join = join
        self.raw_partitions = raw_partitions
        self.raw_types = raw_types
        self.positions = positions if positions is not None else Positions()
        self.check_partition = check_partition
        self.cells: Cells = {}
        self.raw: list[RawChunk] = []
        self.raw_rows = 0  # events in ``raw``
        self.pending_events = 0
        self.events_in: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)  # since start
        self.dropped: dict[str, int] = {}  # cause -> events, since start
        self.watermark = 0.0  # the latest event timestamp seen
        self._covered_until = -1  # last minute recorded as covered
        self._handlers: dict[str, Callable[[Event, float], None]] = {
            "auction": self._count_auction,
            "bid": self._count_bid,
            "impression": self._count_impression,
            "billing": self._count_billing,
        }

    def drop(self, cause: str, count: int) -> None:
        self.dropped[cause] = self.dropped.get(cause, 0) + count

    def add(self, topic: str, partition: int, event_type: str, payloads: list[bytes]) -> int:
        """Fold one delivered batch (all of one topic). Returns the events accepted.

        The fast path decodes the whole batch in one call into slim structs holding only what
        the aggregates need (the payloads are complete msgpack values, so behind an array
        header they are one array), then counts with ``collections.Counter``. A batch that does
        not decode whole, or holds a bad timestamp or a foreign partition, goes through
        :meth:`add_each`, the per-event reference, which drops exactly the bad events.
        """
        lite = LITE_DECODERS.get(event_type)
        if lite is None:
            self.drop(UNKNOWN_TOPIC, len(payloads))
            return 0
        n = len(payloads)
        if n == 0:
            return 0
        keep_raw = partition in self.raw_partitions and event_type in self.raw_types
        # the raw sample needs the whole events (and their strict checks); counting needs less
        decoder = FULL_DECODERS[event_type] if keep_raw else lite
        try:
            events: list[Any] = decoder.decode(_ARRAY32.pack(0xDD, n) + b"".join(payloads))
        except msgspec.DecodeError:
            return self.add_each(topic, partition, event_type, payloads)
        if len(events) != n:
            return self.add_each(topic, partition, event_type, payloads)
        stamps = [e.ts for e in events]
        low, high = min(stamps), max(stamps)
        if not (low >= 0.0 and high < MAX_TS) or (
            self.check_partition and partition_of(events[0].txid, self.total) != partition
        ):  # nan fails the first test too, wherever it is: min/max keep it or fail on it
            return self.add_each(topic, partition, event_type, payloads)
        checksum = sum(stamps)
        if checksum != checksum:  # a nan among them (min/max may step over one)
            return self.add_each(topic, partition, event_type, payloads)
        if high > self.watermark:
            self.watermark = high
        cells = self.cells
        if event_type == "bid":
            self.join.put_many(
                [e.txid for e in events],
                [round(p * P_SCALE) if 0.0 <= p <= 1.0 else 0 for p in [e.p_click for e in events]],
                stamps,
            )
        if event_type == "impression":
            take = self.join.take
            for e in events:
                minute = int(e.ts) // MINUTE * MINUTE
                cell = cells.get((minute, e.campaign_id, e.creative_id, event_type))
                if cell is None:
                    cell = cells[(minute, e.campaign_id, e.creative_id, event_type)] = [0, 0, 0, 0]
                cell[0] += 1
                p_e9 = take(e.txid)
                if p_e9 is not None:
                    cell[2] += p_e9
                    cell[3] += 1
        elif event_type == "billing":
            for e in events:
                minute = int(e.ts) // MINUTE * MINUTE
                cell = cells.get((minute, e.campaign_id, e.creative_id, event_type))
                if cell is None:
                    cell = cells[(minute, e.campaign_id, e.creative_id, event_type)] = [0, 0, 0, 0]
                cell[0] += 1
                cell[1] += e.cost_micros
        else:
            if event_type == "auction":  # no campaign yet: campaign 0, creative 0
                counts = collections.Counter([(int(e.ts) // MINUTE * MINUTE, 0, 0) for e in events])
            else:
                counts = collections.Counter(
                    [(int(e.ts) // MINUTE * MINUTE, e.campaign_id, e.creative_id) for e in events]
                )
            for (minute, campaign, creative), count in counts.items():
                key = (minute, campaign, creative, event_type)
                cell = cells.get(key)
                if cell is None:
                    cells[key] = [count, 0, 0, 0]
                else:
                    cell[0] += count
        if keep_raw:
            self._keep_raw(event_type, partition, events, stamps)
        self.pending_events += n
        self.events_in[event_type] += n
        return n

    def _keep_raw(
        self, event_type: str, partition: int, events: list[Any], stamps: list[float]
    ) -> None:
        self.raw.append(
            chunk_of(event_type, partition, events, stamps, event_type in _WITH_CAMPAIGN)
        )
        self.raw_rows += len(events)

    def add_each(self, topic: str, partition: int, event_type: str, payloads: list[bytes]) -> int:
        """The reference: one event at a time, each bad one dropped with its cause."""
        decoder = DECODERS.get(event_type)
        if decoder is None:
            self.drop(UNKNOWN_TOPIC, len(payloads))
            return 0
        decode = decoder.decode
        handler = self._handlers.get(event_type)
        cells = self.cells
        keep_raw = partition in self.raw_partitions and event_type in self.raw_types
        check = self.check_partition
        total = self.total
        accepted = 0
        latest = self.watermark
        kept: list[Event] = []
        kept_stamps: list[float] = []
        for payload in payloads:
            try:
                event = decode(payload)
            except msgspec.DecodeError:
                self.drop(UNDECODABLE, 1)
                continue
            ts = event.ts
            if not 0.0 <= ts < MAX_TS:  # also false for nan
                self.drop(BAD_TIMESTAMP, 1)
                continue
            if check and partition_of(event.txid, total) != partition:
                self.drop(WRONG_PARTITION, 1)
                continue
            if ts > latest:
                latest = ts
            minute = int(ts) // MINUTE * MINUTE
            if handler is not None:
                handler(event, minute)
            else:
                key = (
                    minute,
                    getattr(event, "campaign_id", 0),
                    getattr(event, "creative_id", 0),
                    event_type,
                )
                cell = cells.get(key)
                if cell is None:
                    cells[key] = [1, 0, 0, 0]
                else:
                    cell[0] += 1
            if keep_raw:
                kept.append(event)
                kept_stamps.append(ts)
            accepted += 1
        if kept:
            self._keep_raw(event_type, partition, kept, kept_stamps)
        self.watermark = latest
        self.pending_events += accepted
        self.events_in[event_type] += accepted
        return accepted

    def _cell(self, key: tuple[int, int, int, str]) -> list[int]:
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0, 0, 0, 0]
        return cell

    def _count_auction(self, event: Event, minute: float) -> None:
        self._cell((int(minute), 0, 0, "auction"))[0] += 1

    def _count_bid(self, event: Event, minute: float) -> None:
        assert isinstance(event, BidEvent)
        self._cell((int(minute), event.campaign_id, event.creative_id, "bid"))[0] += 1
        p = event.p_click
        p_e9 = round(p * P_SCALE) if 0.0 <= p <= 1.0 else 0
        self.join.put(event.txid, p_e9, event.ts)

    def _count_impression(self, event: Event, minute: float) -> None:
        assert isinstance(event, ImpressionEvent)
        cell = self._cell((int(minute), event.campaign_id, event.creative_id, "impression"))
        cell[0] += 1
        p_e9 = self.join.take(event.txid)
        if p_e9 is not None:
            cell[2] += p_e9
            cell[3] += 1

    def _count_billing(self, event: Event, minute: float) -> None:
        assert isinstance(event, BillingEvent)
        cell = self._cell((int(minute), event.campaign_id, event.creative_id, "billing"))
        cell[0] += 1
        cell[1] += event.cost_micros

    def _coverage(self) -> list[int]:
        minutes = {key[0] for key in self.cells}
        if self.watermark > 0:
            latest = int(self.watermark) // MINUTE * MINUTE
            start = self._covered_until if self._covered_until >= 0 else latest
            start = max(start, latest - MAX_COVERAGE_GAP * MINUTE)
            minutes.update(range(start, latest + 1, MINUTE))
            self._covered_until = max(self._covered_until, latest)
        return sorted(minutes)

    def flush(self, seq: int) -> Batch:
        """Everything folded since the last flush, as batch ``seq``; the cells start again."""
        self.join.expire(self.watermark)
        chunks = self.raw
        raw: list[RawRow] = []
        raw_copy, first, last = b"", 0, 0
        if chunks:
            try:
                raw_copy, first, last = encode_chunks(chunks, self.logger_id, seq)
            except OverflowError:  # left to the writer, which sets the batch aside as refused
                raw_copy, raw = b"", rows_of(chunks)
        rows = [
            AggRow(minute, campaign, creative, etype, c[0], c[1], c[2], c[3])
            for (minute, campaign, creative, etype), c in self.cells.items()
        ]
        batch = Batch(
            logger_id=self.logger_id,
            seq=seq,
            shard=self.shard,
            partitions_covered=self.covered,
            partitions_total=self.total,
            events=self.pending_events,
            rows=rows,
            coverage=self._coverage(),
            positions=self.positions.take_dirty(),
            losses=self.positions.take_losses(),
            raw=raw,
            raw_copy=raw_copy,
            raw_events=self.raw_rows,
            raw_first=first,
            raw_last=last,
            chunks=chunks,
        )
        self.cells = {}
        self.raw = []
        self.raw_rows = 0
        self.pending_events = 0
        return batch


_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(Batch)


def encode_batch(batch: Batch) -> bytes:
    return _batch_encoder.encode(batch)


def decode_batch(data: bytes) -> Batch:
    """Raises ``msgspec.DecodeError`` on bytes that are not a batch."""
    return _batch_decoder.decode(data)
