from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import auction
from sim.auction import RtbBid, clear, format_cpm, run, substitute_macros, to_usd
from sim.market import Slot
from sim.population import Deal, Placement

PLACEMENT = Placement(
    tag_id="tag-1",
    format="banner",
    size="300x250",
    w=300,
    h=250,
    pos=1,
    interstitial=False,
    rewarded=False,
    quality=0.0,
    floor_usd_micros=500_000,
    deals=(),
    private_auction=False,
)


def slot(
    floor: int = 500_000, currency: str = "USD", competing: int = 1_000_000, **kw: object
) -> Slot:
    placement = dataclasses.replace(PLACEMENT, **kw)  # type: ignore[arg-type]
    return Slot("1", placement, floor, currency, placement.deals, competing)


def bid(price: float, **kw: object) -> RtbBid:
    values: dict[str, object] = {
        "id": "b1",
        "impid": "1",
        "price": price,
        "adm": "<a>",
        "crid": "9",
        "cid": "3",
    }
    values.update(kw)
    return RtbBid(**values)  # type: ignore[arg-type]


def test_first_price_pays_the_bid() -> None:
    out = clear(bid=2_000_000, competing=1_000_000, floor=500_000, auction_type=1)
    assert out.won and out.clear_usd_micros == 2_000_000


def test_second_price_pays_the_second_price_or_the_floor() -> None:
    assert clear(2_000_000, 1_000_000, 500_000, 2).clear_usd_micros == 1_000_000
    assert clear(2_000_000, 300_000, 500_000, 2).clear_usd_micros == 500_000  # floor above 2nd
    assert clear(2_000_000, 0, 0, 2).clear_usd_micros == 0  # nobody else, no floor


def test_below_floor_and_outbid_and_ties() -> None:
    below = clear(400_000, 100_000, 500_000, 1)
    assert not below.won and below.loss_reason == auction.BELOW_FLOOR
    outbid = clear(900_000, 1_000_000, 500_000, 2)
    assert not outbid.won and outbid.loss_reason == auction.OUTBID
    assert outbid.winning_usd_micros == 900_000  # the winner pays our bid in second price
    assert clear(900_000, 1_000_000, 500_000, 1).winning_usd_micros == 1_000_000
    tie = clear(1_000_000, 1_000_000, 0, 1)
    assert not tie.won and tie.loss_reason == auction.OUTBID
    assert clear(500_000, 0, 500_000, 1).won  # exactly at the floor is enough


@given(st.integers(1, 10**8), st.integers(0, 10**8), st.integers(0, 10**8), st.sampled_from([1, 2]))
def test_auction_invariants(bid_: int, competing: int, floor: int, at: int) -> None:
    out = clear(bid_, competing, floor, at)
    assert out.won == (bid_ >= floor and bid_ > competing)
    if out.won:
        assert floor <= out.clear_usd_micros <= bid_
        assert out.clear_usd_micros >= min(competing, bid_)
        if at == 1:
            assert out.clear_usd_micros == bid_


def test_floors_in_other_currencies_are_converted_like_the_bidder_does() -> None:
    # 0.92 EUR per USD: a 0.46 EUR floor is exactly 0.50 USD
    assert to_usd(460_000, "EUR") == 500_000
    s = slot(floor=460_000, currency="EUR", competing=0)
    assert run(bid(0.5), s, 1).won
    assert run(bid(0.499999), s, 1).loss_reason == auction.BELOW_FLOOR
    # a bid in EUR is converted too
    assert run(bid(0.46), s, 1, currency="EUR").won
    with pytest.raises(ValueError):
        to_usd(1, "XXX")


def test_validation_throws_out_bad_bids() -> None:
    s = slot()
    assert run(bid(0.0), s, 1).loss_reason == auction.MISSING_PRICE
    assert run(bid(2.0, adm="", nurl=""), s, 1).loss_reason == auction.MISSING_MARKUP
    assert run(bid(2.0, crid=""), s, 1).loss_reason == auction.MISSING_CREATIVE_ID
    assert run(bid(2.0, dealid="nope"), s, 1).loss_reason == auction.INVALID_DEAL
    assert run(bid(2.0, w=728, h=90), s, 1).loss_reason == auction.SIZE_NOT_ALLOWED
    assert run(bid(2.0, cat=["IAB25-3"]), s, 1).loss_reason == auction.CATEGORY_EXCLUDED
    assert run(bid(2.0, adm="", nurl="http://x/win"), s, 1).won


def test_deals() -> None:
    deal = Deal(id="d1", floor_usd_micros=2_000_000, auction_type=3, price_multiplier=1.0)
    s = slot(competing=1_000_000, deals=(deal,), private_auction=True)
    fixed = run(bid(2.5, dealid="d1"), s, 1)
    assert fixed.won and fixed.clear_usd_micros == 2_000_000  # fixed price pays the deal floor
    assert run(bid(1.9, dealid="d1"), s, 1).loss_reason == auction.BELOW_DEAL_FLOOR
    assert run(bid(9.0), s, 1).loss_reason == auction.LOST_TO_DEAL  # private: deals only
    open_auction = slot(competing=1_000_000, deals=(deal,), private_auction=False)
    assert run(bid(9.0), open_auction, 1).won  # the deal's buyers did not reach its floor
    strong = dataclasses.replace(deal, price_multiplier=10.0)
    contested = slot(competing=1_000_000, deals=(strong,), private_auction=False)
    assert run(bid(9.0), contested, 1).loss_reason == auction.LOST_TO_DEAL


def test_format_cpm_is_exact() -> None:
    assert format_cpm(1_234_567) == "1.234567"
    assert format_cpm(500_000) == "0.5"
    assert format_cpm(2_000_000) == "2"
    assert format_cpm(1) == "0.000001"


def test_macro_substitution() -> None:
    b = bid(1.0, id="bid-7", impid="2", adid="ad-3")
    values = auction.macro_values(
        request_id="req-1", bid=b, seat="s1", price="1.5", currency="USD", loss=102
    )
    url = (
        "http://127.0.0.1:8090/win?txid=t&price=${AUCTION_PRICE}&cur=${AUCTION_CURRENCY}"
        "&a=${AUCTION_ID}&i=${AUCTION_IMP_ID}&b=${AUCTION_BID_ID}&l=${AUCTION_LOSS}"
        "&s=${AUCTION_SEAT_ID}&ad=${AUCTION_AD_ID}&enc=%24%7BAUCTION_PRICE%7D&x=${OTHER}"
    )
    assert substitute_macros(url, values) == (
        "http://127.0.0.1:8090/win?txid=t&price=1.5&cur=USD&a=req-1&i=2&b=bid-7&l=102"
        "&s=s1&ad=ad-3&enc=1.5&x=${OTHER}"
    )
    assert substitute_macros("no macros", values) == "no macros"
    assert substitute_macros("${AUCTION_UNKNOWN}", values) == "${AUCTION_UNKNOWN}"


def test_parse_response_is_lenient_with_numbers_as_strings() -> None:
    body = (
        b'{"id":"r","cur":"USD","seatbid":[{"seat":"s","bid":[{"id":"b","impid":"1",'
        b'"price":"1.25","crid":"7","cid":"3","adomain":["a.example"],"ext":{"x":1}}]}]}'
    )
    parsed = auction.parse_response(body)
    assert parsed.seatbid[0].bid[0].price == 1.25
    with pytest.raises(ValueError):
        auction.parse_response(b'{"seatbid": 5}')
