"""What one bid request came to: the ``Answer`` and every event it publishes, built here only.

The pipeline decides; this module turns the decision into the answer the endpoint sends and
the events the event bus carries: the auction event (one per request), a bid event per bid,
and the rewrite of a bid that missed its deadline at the last check into a late no-bid. The
answer carries its own deadlines (``deadline`` for a bid, ``expires`` for any answer at all),
computed by the pipeline from ``bidder.options.TmaxBounds``, so the endpoint never reads
``tmax`` again.

Every bid's transaction id is ``<request.id>:<imp.id>:<bidder_id>``: unique per bid, the bid's
``id``, carried by its notice URLs and by every later event. The auction event carries the first
imp's transaction id, so that a single-imp request (nearly all of them) keeps its auction and bid
events in one event-bus partition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from bidder.auction import Offer
from bidder.openrtb import BidRequest, BidResponse, Nbr, encode_response
from bidder.options import PipelineSettings
from bidder.targeting import RequestView
from fleet.events import AnyEvent, AuctionEvent, BidEvent

# The OpenRTB no-bid reason of each of our own reasons (the rest: UNKNOWN).
NBR_OF_REASON: Final = {
    "crawler": Nbr.WEB_SPIDER,
    "datacenter": Nbr.DATACENTER_IP,
    "blocked_publisher": Nbr.BLOCKED_PUBLISHER,
    "schain": Nbr.INCOMPLETE_SCHAIN,
    "deadline": Nbr.INSUFFICIENT_TIME,
    "no_user": Nbr.UNMATCHED_USER,
    "not_ready": Nbr.TECHNICAL,
    "internal": Nbr.TECHNICAL,
}
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
    deadline: float = math.inf  # (monotonic clock) a bid may not be sent from then on
    expires: float = math.inf  # (monotonic clock) nothing may be sent from then on
    # each imp's candidate campaign ids (distinct within an imp; a campaign may be eligible in
    # several imps): the eligible opportunities the pacing link counts, not published
    opportunities: list[npt.NDArray[np.int64]] = field(default_factory=list)


def nbr_for(reason: str) -> int:
    return NBR_OF_REASON.get(reason, Nbr.UNKNOWN)


def txid_for(request_id: str, imp_id: str, bidder_id: str) -> str:
    return f"{request_id}:{imp_id}:{bidder_id}"


# -- events -------------------------------------------------------------------------------------


def auction_event(
    bidder_id: str,
    req: BidRequest | None,
    view: RequestView | None,
    *,
    wallclock: float,
    exchange: str,
    outcome: str,
    nbr: int | None,
    reason: str,
    candidates: int,
    latency_us: int,
    anonymous_txid: str = "",
) -> AuctionEvent:
    """The one event of every request; without a decoded request (a 400), an anonymous one,
    under ``anonymous_txid`` (``bidder.anonymous``: one per request, spread over partitions)."""
    if req is None or view is None:
        return AuctionEvent(
            txid=anonymous_txid or f"::{bidder_id}",
            ts=wallclock,
            bidder_id=bidder_id,
            exchange=exchange,
            imps=0,
            outcome=outcome,
            nbr=nbr,
            reason=reason,
            latency_us=latency_us,
        )
    return AuctionEvent(
        txid=txid_for(req.id, req.imp[0].id, bidder_id),
        ts=wallclock,
        bidder_id=bidder_id,
        exchange=exchange,
        imps=len(req.imp),
        outcome=outcome,
        nbr=nbr,
        reason=reason,
        candidates=candidates,
        latency_us=latency_us,
        auction_type=req.at,
        country=view.country,
        os=view.os,
        device_type=view.device_type,
        app_bundle=view.app_bundle,
        site_domain=view.site_domain,
    )


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
        p_win=offer.p_win,
        campaign_bid_cpm_micros=offer.entry.to_campaign_currency(offer.price),
        segment=offer.segment,
    )


def make_late(answer: Answer) -> None:
    """A bid dropped at the last check before the wire: its events must not say it was sent
    (the bid events go, the auction event says "late"). Its opportunities stay: the campaigns
    were eligible all the same."""
    if answer.outcome == "late":
        return
    answer.outcome, answer.reason, answer.bids = "late", "deadline", []
    answer.events = [
        msgspec.structs.replace(e, outcome="late", reason="deadline", nbr=Nbr.INSUFFICIENT_TIME)
        for e in answer.events
        if isinstance(e, AuctionEvent)
    ]


# -- answers ------------------------------------------------------------------------------------


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
    deadline: float = math.inf,
    expires: float = math.inf,
    opportunities: list[npt.NDArray[np.int64]] | None = None,
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
        deadline=deadline,
        expires=expires,
        opportunities=opportunities or [],
    )


def invalid(reason: str, nbr: int, events: list[AnyEvent] | None = None) -> Answer:
    """A 400 with the reason in a JSON body (a body we cannot read is no auction: no tmax)."""
    return Answer(
        status=400,
        body=_json.encode({"error": reason}),
        outcome="invalid",
        nbr=nbr,
        reason="invalid",
        events=events or [],
        detail=reason,
    )
