"""The exchange's rules, with no I/O: read a bid response, validate each bid against the request,
run the auction against the competing demand and the floor, fill notice macros.

Rules (all prices CPM in integer micros of USD, the currency the simulated exchange clears in):
- A floor sent in another currency is converted back exactly as the bidder would: micros of the
  floor currency × 1e6 // (units per USD × 1e6), so a bid at the converted floor is at the floor.
- First price (at=1): the winner pays its bid. Second price (at=2): the winner pays
  max(best other bid, floor) (never more than its bid). Fixed-price deals (at=3) pay the deal floor.
- A bid must beat the best other bid strictly; a tie goes to the other buyer.
- Deal bids are judged against their deal's floor and the other deal buyers; an open-auction bid
  loses to a deal bid from another buyer (loss 103) and, in a private auction, cannot run at all.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import msgspec

from sim import vocabulary as vocab
from sim.market import Slot

# OpenRTB loss reason codes (2.5 §5.25).
WON = 0
INTERNAL_ERROR = 1
EXPIRED = 2  # the answer came after tmax
INVALID_RESPONSE = 3
INVALID_DEAL = 4
INVALID_AUCTION_ID = 5
MISSING_MARKUP = 7
MISSING_CREATIVE_ID = 8
MISSING_PRICE = 9
BELOW_FLOOR = 100
BELOW_DEAL_FLOOR = 101
OUTBID = 102
LOST_TO_DEAL = 103
SIZE_NOT_ALLOWED = 203
ADVERTISER_EXCLUDED = 205
CATEGORY_EXCLUDED = 209

DEAL_DEMAND_SHARE = 0.6  # other deal buyers bid this share of the open market's best bid


class RtbBid(msgspec.Struct, kw_only=True):
    id: str = ""
    impid: str = ""
    price: float = 0.0
    adm: str = ""
    nurl: str = ""
    burl: str = ""
    lurl: str = ""
    adomain: list[str] = msgspec.field(default_factory=list)
    cat: list[str] = msgspec.field(default_factory=list)
    crid: str = ""
    cid: str = ""
    adid: str = ""
    dealid: str = ""
    w: int = 0
    h: int = 0


class SeatBid(msgspec.Struct, kw_only=True):
    bid: list[RtbBid] = msgspec.field(default_factory=list)
    seat: str = ""


class BidResponse(msgspec.Struct, kw_only=True):
    id: str = ""
    seatbid: list[SeatBid] = msgspec.field(default_factory=list)
    bidid: str = ""
    cur: str = "USD"
    nbr: int | None = None


_response_decoder = msgspec.json.Decoder(BidResponse, strict=False)


def parse_response(body: bytes) -> BidResponse:
    """Raises ``msgspec.DecodeError`` (a ValueError) when the body is not a bid response."""
    return _response_decoder.decode(body)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    won: bool
    loss_reason: int
    clear_usd_micros: int  # what we pay (CPM) when we win
    winning_usd_micros: int  # what the winner paid (CPM), for loss notices; 0 when unsold


def to_usd(micros: int, currency: str) -> int:
    """CPM micros of ``currency`` as USD micros, rounded down (as the bidder converts floors)."""
    fx = vocab.FX_PER_USD_MICROS.get(currency)
    if fx is None:
        raise ValueError(f"unknown currency {currency!r}")
    return micros * 1_000_000 // fx


def price_micros(price: float) -> int:
    """A wire CPM as micros; prices are rounded to the micro as every exchange does."""
    return round(price * 1_000_000)


def validate(
    bid: RtbBid,
    slot: Slot,
    *,
    bcat: tuple[str, ...] = vocab.SENSITIVE_CATEGORIES,
    badv: tuple[str, ...] = (),
) -> int:
    """0 when the bid may enter the auction, else the loss reason that throws it out."""
    if bid.price <= 0:
        return MISSING_PRICE
    if not bid.adm and not bid.nurl:
        return MISSING_MARKUP
    if not bid.crid:
        return MISSING_CREATIVE_ID
    if bid.dealid and all(d.id != bid.dealid for d in slot.deals):
        return INVALID_DEAL
    pl = slot.placement
    if pl.format == "banner" and bid.w and bid.h and (bid.w, bid.h) != (pl.w, pl.h):
        return SIZE_NOT_ALLOWED
    if badv and any(d in badv for d in bid.adomain):
        return ADVERTISER_EXCLUDED
    if any(c in bcat or c.split("-")[0] in bcat for c in bid.cat):
        return CATEGORY_EXCLUDED
    return WON


def clear(bid: int, competing: int, floor: int, auction_type: int) -> Outcome:
    """The open auction (or a deal) for one bid; all arguments CPM micros of USD."""
    if bid < floor:
        return Outcome(False, BELOW_FLOOR, 0, competing if competing >= floor else 0)
    if bid <= competing:
        winner_pays = competing if auction_type == 1 else max(bid, floor)
        return Outcome(False, OUTBID, 0, winner_pays)
    if auction_type == 1:
        price = bid
    elif auction_type == 3:
        price = floor
    else:
        price = max(competing, floor)
    return Outcome(True, WON, price, price)


def run(bid: RtbBid, slot: Slot, auction_type: int, currency: str = "USD") -> Outcome:
    """Validate and clear ``bid`` (already known to be for ``slot``) in the bid's currency."""
    reason = validate(bid, slot)
    if reason:
        return Outcome(False, reason, 0, 0)
    amount = to_usd(price_micros(bid.price), currency)
    pl = slot.placement
    if bid.dealid:
        deal = next(d for d in slot.deals if d.id == bid.dealid)
        fx = vocab.FX_PER_USD_MICROS[slot.floor_currency]
        deal_floor = to_usd(deal.floor_usd_micros * fx // 1_000_000, slot.floor_currency)
        others = round(slot.competing_usd_micros * DEAL_DEMAND_SHARE * deal.price_multiplier)
        outcome = clear(amount, others, deal_floor, deal.auction_type)
        if outcome.loss_reason == BELOW_FLOOR:
            return dataclasses.replace(outcome, loss_reason=BELOW_DEAL_FLOOR)
        return outcome
    if slot.deals:
        fx = vocab.FX_PER_USD_MICROS[slot.floor_currency]
        deal_won = any(
            slot.competing_usd_micros * DEAL_DEMAND_SHARE * d.price_multiplier
            >= to_usd(d.floor_usd_micros * fx // 1_000_000, slot.floor_currency)
            for d in slot.deals
        )
        if pl.private_auction or deal_won:
            return Outcome(False, LOST_TO_DEAL, 0, 0)
    return clear(
        amount, slot.competing_usd_micros, to_usd(slot.floor, slot.floor_currency), auction_type
    )


def format_cpm(micros: int) -> str:
    """Exact decimal text of a CPM in micros: 1234567 -> "1.234567", 500000 -> "0.5"."""
    whole, frac = divmod(micros, 1_000_000)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:06d}".rstrip("0")


_MACRO = re.compile(r"\$\{(AUCTION_[A-Z_]+)\}|%24%7B(AUCTION_[A-Z_]+)%7D")


def substitute_macros(template: str, values: Mapping[str, str]) -> str:
    """Replace ``${AUCTION_*}`` (also URL-encoded) macros; unknown macros are left as they are."""
    if "AUCTION_" not in template:
        return template

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _MACRO.sub(one, template)


def macro_values(
    *,
    request_id: str,
    bid: RtbBid,
    seat: str,
    price: str,
    currency: str,
    loss: int,
    min_to_win: str = "",
) -> dict[str, str]:
    return {
        "AUCTION_ID": request_id,
        "AUCTION_BID_ID": bid.id,
        "AUCTION_IMP_ID": bid.impid,
        "AUCTION_SEAT_ID": seat,
        "AUCTION_AD_ID": bid.adid,
        "AUCTION_PRICE": price,
        "AUCTION_CURRENCY": currency,
        "AUCTION_LOSS": str(loss),
        "AUCTION_MBR": min_to_win,
        "AUCTION_MIN_TO_WIN": min_to_win,
    }
