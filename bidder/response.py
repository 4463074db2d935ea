"""The bid response: each bid with its signed notice URLs and markup, and the body around them.

The answer around it (no-bids, 400s, the events) is ``bidder.outcome``'s.
"""

from __future__ import annotations

from typing import Final

from bidder.auction import Offer
from bidder.openrtb import Bid, BidResponse, SeatBid, encode_response
from bidder.options import PipelineSettings
from fleet import signing

MTYPE: Final = {"banner": 1, "video": 2, "audio": 3, "native": 4}
_NURL_KINDS: Final = ("win", "bill", "loss")


def build_bid(
    offer: Offer,
    txid: str,
    settings: PipelineSettings,
    wallclock: float,
    signer: signing.Signer,
    user_key: str | None = None,
) -> Bid:
    """One bid; ``user_key`` (the keyed hash, only when the request's privacy signals allow
    it) goes signed into its notice URLs, so that the tracker counts the impression under the
    key the frequency caps are read with."""
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
        user_key=user_key or "",
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
