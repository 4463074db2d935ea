"""The event schema: what happens to a transaction, as msgpack on the event bus.

Every event carries the transaction id (the bid request id as we saw it, made unique per bidder),
a timestamp (seconds since the epoch), campaign and creative ids where there are any, and money in
integer micros. Bid events carry the features the model scored, so that the learner can join the
outcome to exactly what the bidder saw.

Topics are ``ev.<partition>.<type>`` with a fixed-width partition (``ev.0007.bid``) so that a
prefix subscription to ``ev.0007.`` is exact. The partition is a stable hash of the transaction
id, so subscribing to k of P partitions is a consistent k/P sample of whole transactions.
"""

from __future__ import annotations

from typing import Final

import mmh3
import msgspec

EVENT_TOPIC_PREFIX: Final = "ev."
PARTITION_WIDTH: Final = 4
DEFAULT_PARTITIONS: Final = 64


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    txid: str
    ts: float


class AuctionEvent(Event, tag="auction", frozen=True, kw_only=True):
    """One bid request and what we answered."""

    bidder_id: str
    exchange: str
    imps: int
    outcome: str  # "bid" | "nobid" | "shed" | "invalid"
    nbr: int | None = None  # OpenRTB no-bid reason when outcome != "bid"
    reason: str = ""  # our own finer reason (a filter name, "no_candidates", ...)
    candidates: int = 0
    latency_us: int = 0
    auction_type: int = 2
    country: str = ""
    os: str = ""
    device_type: int = 0
    app_bundle: str = ""
    site_domain: str = ""
    # No eligible-opportunity columns any more (opportunity_campaigns, opportunity_counts: the
    # campaign ids of every candidate, thousands a request): the bidder counts them into its
    # pacing gate, which reports them to the pacer. msgspec ignores unknown fields on decode,
    # so an event from an older bidder that still carries them decodes all the same.


class BidEvent(Event, tag="bid", frozen=True, kw_only=True):
    """A bid we sent: the features scored and the prices, for the learner and the pacer."""

    imp_id: str
    campaign_id: int
    creative_id: int
    bid_cpm_micros: int
    floor_cpm_micros: int
    value_cpm_micros: int  # what the impression was worth to us
    p_click: float
    p_install: float
    auction_type: int
    features: list[str] = msgspec.field(default_factory=list)
    deal_id: str = ""
    model_version: int = 0
    p_win: float = 0.0  # P(win | bid) as priced: the pacer reserves E(cost) = bid x p_win
    campaign_bid_cpm_micros: int = 0  # the bid in the campaign's currency (0: not known)
    segment: str = ""  # the market-price segment the bid was priced in (the learner's key)


class WinEvent(Event, tag="win", frozen=True, kw_only=True):
    campaign_id: int
    creative_id: int
    bid_cpm_micros: int
    clear_cpm_micros: int  # the clearing price the exchange reported


class LossEvent(Event, tag="loss", frozen=True, kw_only=True):
    campaign_id: int
    creative_id: int
    bid_cpm_micros: int
    loss_reason: int = 0  # OpenRTB loss reason code
    clear_cpm_micros: int = 0  # the winning price when the exchange tells it, else 0


class BillingEvent(Event, tag="billing", frozen=True, kw_only=True):
    """The exchange billed us: cost of this one impression is ``clear_cpm_micros // 1000``."""

    campaign_id: int
    creative_id: int
    clear_cpm_micros: int
    cost_micros: int


class ImpressionEvent(Event, tag="impression", frozen=True, kw_only=True):
    campaign_id: int
    creative_id: int


class ClickEvent(Event, tag="click", frozen=True, kw_only=True):
    campaign_id: int
    creative_id: int
    click_id: str = ""  # what the redirect carried; a postback brings it back


class InstallEvent(Event, tag="install", frozen=True, kw_only=True):
    """An install postback, counted once per device and app. Organic installs carry campaign
    and creative 0 and, having no bid, ``organic:<user key>`` as their txid."""

    campaign_id: int
    creative_id: int
    partner: str = ""
    click_id: str = ""  # the click it is attributed to ("" when organic)
    user_key: str = ""  # the device's user key (a keyed hash, never the raw device id)
    attributed: bool = False
    rule: str = "organic"  # click_id, last_click or organic
    app: str = ""
    currency: str = "USD"


class InAppEvent(Event, tag="inapp", frozen=True, kw_only=True):
    campaign_id: int
    creative_id: int
    name: str
    revenue_micros: int = 0  # in ``currency``
    partner: str = ""
    click_id: str = ""
    user_key: str = ""
    attributed: bool = False
    app: str = ""
    currency: str = "USD"


AnyEvent = (
    AuctionEvent
    | BidEvent
    | WinEvent
    | LossEvent
    | BillingEvent
    | ImpressionEvent
    | ClickEvent
    | InstallEvent
    | InAppEvent
)

EVENT_TYPES: Final = (
    "auction",
    "bid",
    "win",
    "loss",
    "billing",
    "impression",
    "click",
    "install",
    "inapp",
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyEvent)


def encode(event: AnyEvent) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bytes that are not an event."""
    event: AnyEvent = _decoder.decode(data)
    return event


def event_type(event: AnyEvent) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def partition_of(txid: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Stable across processes and hosts (MurmurHash3), unlike ``hash()``."""
    return int(mmh3.hash(txid, 0, signed=False)) % partitions


def partition_prefix(partition: int) -> str:
    """The exact subscription prefix of one partition: ``ev.0007.``."""
    return f"{EVENT_TOPIC_PREFIX}{partition:0{PARTITION_WIDTH}d}."


# (partition, event class) -> topic: a bounded set (partitions x event types), built once each
_topics: dict[tuple[int, type], str] = {}


def topic_for(event: AnyEvent, partitions: int = DEFAULT_PARTITIONS) -> str:
    """``ev.<partition of the txid>.<type>``; per event published, so the string is cached."""
    partition = partition_of(event.txid, partitions)
    key = (partition, type(event))
    topic = _topics.get(key)
    if topic is None:
        topic = _topics[key] = partition_prefix(partition) + event_type(event)
    return topic
