"""Answers: the bid response with signed notice URLs, the no-bid and the 400, and the events.

Every bid's transaction id is ``<request.id>:<imp.id>:<bidder_id>``: unique per bid, the bid's
``id``, carried by its notice URLs and by every later event. The auction event carries the first
imp's transaction id, so that a single-imp request (nearly all of them) keeps its auction and bid
events in one event-bus partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import msgspec

from bidder.auction import Offer
from bidder.openrtb import Bid, BidResponse, SeatBid, encode_response
from fleet import signing
from fleet.events import AnyEvent, BidEvent

if TYPE_CHECKING:
    from bidder.pipeline import PipelineSettings

MTYPE: Final = {"banner": 1, "video": 2, "audio": 3, "native": 4}
_NURL_KINDS: Final = ("win", "bill", "loss")
_json: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class BidSummary:
    campaign_id: int
    creative_id: int
    price_cpm_micros: int  # bidding currency, what the exchange sees
    imp_id: str = ""
    txid: str = ""
    deal_id: str = ""
    campaign_price_cpm_micros: int = 0  # the same price in the campaign's currency


@dataclass
class Answer:
    status: int  # 200 bid, 204 no bid, 400 malformed
    body: bytes  # JSON bid response / {"error": reason} for 400 / b"" for 204
    outcome: str  # "bid" | "nobid" | "invalid" | "late"
    nbr: int | None  # OpenRTB no-bid reason
    reason: str  # bounded label for metrics
    candidates: int = 0
    bids: list[BidSummary] = field(default_factory=list)
    events: list[AnyEvent] = field(default_factory=list)
    request_id: str | None = None
    detail: str = ""  # the full reason of a 400 (also in the body)


def txid_for(request_id: str, imp_id: str, bidder_id: str) -> str:
    return f"{request_id}:{imp_id}:{bidder_id}"


def build_bid(
    offer: Offer, txid: str, settings: PipelineSettings, wallclock: float, signer: signing.Signer
) -> Bid:
    cr, campaign = offer.creative, offer.entry.campaign
    timestamp = int(wallclock)
    kinds = _NURL_KINDS if settings.use_nurl else signing.KINDS
    urls = signer.bid_notice_urls(
        settings.tracker_base_url,
        kinds,
        txid=txid,
        campaign_id=campaign.id,
        creative_id=cr.id,
        price=offer.price,
        currency=settings.currency,
        timestamp=timestamp,
        expires=timestamp + settings.notice_ttl_s,
    )
    adm = None
    if not settings.use_nurl:
        adm = signing.render_markup(cr.markup, urls["imp"], urls["click"])
    creative_id = str(cr.id)
    return Bid(
        id=txid,
        impid=offer.imp.id,
        price=offer.price / 1_000_000,
        nurl=urls["win"],
        burl=urls["bill"],
        lurl=urls["loss"],
        adm=adm,
        adid=creative_id,
        adomain=list(cr.adomain),
        cid=str(campaign.id),
        crid=creative_id,
        cat=list(cr.categories),
        attr=list(cr.attributes),
        dealid=offer.deal.id if offer.deal is not None else None,
        w=cr.w,
        h=cr.h,
        exp=settings.notice_ttl_s,
        mtype=MTYPE.get(cr.format),
    )


def bid_body(request_id: str, bids: list[Bid], settings: PipelineSettings) -> bytes:
    seat = SeatBid(bid=bids, seat=settings.seat or None)
    resp = BidResponse(
        id=request_id,
        seatbid=[seat],
        bidid=f"{request_id}:{settings.bidder_id}",
        cur=settings.currency,
    )
    return encode_response(resp)


def bid_event(offer: Offer, txid: str, wallclock: float, model_version: int) -> BidEvent:
    return BidEvent(
        txid=txid,
        ts=wallclock,
        imp_id=offer.imp.id,
        campaign_id=offer.entry.campaign.id,
        creative_id=offer.creative.id,
        bid_cpm_micros=offer.price,
        floor_cpm_micros=offer.floor,
        value_cpm_micros=offer.value,
        p_click=offer.p_click,
        p_install=offer.p_install,
        auction_type=offer.auction_type,
        features=offer.features,
        deal_id=offer.deal.id if offer.deal is not None else "",
        model_version=model_version,
    )


def summary(offer: Offer, txid: str) -> BidSummary:
    return BidSummary(
        campaign_id=offer.entry.campaign.id,
        creative_id=offer.creative.id,
        price_cpm_micros=offer.price,
        imp_id=offer.imp.id,
        txid=txid,
        deal_id=offer.deal.id if offer.deal is not None else "",
        campaign_price_cpm_micros=offer.entry.to_campaign_currency(offer.price),
    )


def no_bid(
    settings: PipelineSettings,
    *,
    request_id: str | None,
    nbr: int,
    reason: str,
    outcome: str = "nobid",
    candidates: int = 0,
    events: list[AnyEvent] | None = None,
) -> Answer:
    """204 without a body, or 200 with ``{"id", "nbr"}`` when ``settings.nobid_body``."""
    if settings.nobid_body and request_id is not None and outcome != "late":
        body = encode_response(BidResponse(id=request_id, nbr=nbr))
        status = 200
    else:
        body, status = b"", 204
    return Answer(
        status=status,
        body=body,
        outcome=outcome,
        nbr=nbr,
        reason=reason,
        candidates=candidates,
        events=events or [],
        request_id=request_id,
    )


def invalid(reason: str, nbr: int, events: list[AnyEvent] | None = None) -> Answer:
    return Answer(
        status=400,
        body=_json.encode({"error": reason}),
        outcome="invalid",
        nbr=nbr,
        reason="invalid",
        events=events or [],
        detail=reason,
    )
