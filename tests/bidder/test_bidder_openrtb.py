from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from bidder.decoding import decode_request
from bidder.errors import BadRequest, InvalidRequest
from bidder.openrtb import (
    Bid,
    BidRequest,
    BidResponse,
    SeatBid,
    consent_string,
    encode_response,
    gdpr_applies,
    gpp,
    schain,
    us_privacy,
)


def req(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    base.update(fields)
    return base


def decode(doc: Any) -> BidRequest:
    return decode_request(json.dumps(doc).encode())


def test_a_typical_request_decodes_into_typed_objects() -> None:
    r = decode(
        req(
            app={"bundle": "com.x", "publisher": {"id": "p"}},
            device={"geo": {"country": "USA", "utcoffset": -300}, "devicetype": 4},
            user={"data": [{"segment": [{"id": "s1"}, {"id": "s2"}]}]},
            imp=[{"id": "1", "video": {"mimes": ["video/mp4"], "w": 640, "h": 480}}],
        )
    )
    assert r.app is not None and r.app.bundle == "com.x"
    assert r.device is not None and r.device.geo is not None and r.device.geo.utcoffset == -300
    assert r.imp[0].video is not None and r.imp[0].video.mimes == ["video/mp4"]
    assert r.at == 2 and r.imp[0].bidfloorcur == "USD" and r.imp[0].bidfloor == 0.0


@pytest.mark.parametrize(
    ("imp", "check"),
    [
        (
            {"id": "1", "banner": {"w": "300", "h": " 250 "}},
            lambda i: (i.banner.w, i.banner.h) == (300, 250),
        ),
        (
            {"id": "1", "banner": {"w": 300.0, "h": 250.4}},
            lambda i: (i.banner.w, i.banner.h) == (300, 250),
        ),
        ({"id": "1", "bidfloor": "0.5"}, lambda i: i.bidfloor == 0.5),
        ({"id": "1", "bidfloor": 2}, lambda i: i.bidfloor == 2.0),
        ({"id": "1", "secure": "1"}, lambda i: i.secure == 1),
        ({"id": "1", "secure": True}, lambda i: i.secure == 1),
        ({"id": "1", "instl": False}, lambda i: i.instl == 0),
        ({"id": 7}, lambda i: i.id == "7"),
        ({"id": 7.0}, lambda i: i.id == "7"),
        (
            {"id": "1", "banner": {"format": {"w": 320, "h": 50}}},
            lambda i: i.banner.format[0].w == 320,
        ),
        ({"id": "1", "banner": {"battr": "1, 3"}}, lambda i: i.banner.battr == [1, 3]),
        ({"id": "1", "video": {"mimes": "video/mp4"}}, lambda i: i.video.mimes == ["video/mp4"]),
        ({"id": "1", "banner": None, "video": None}, lambda i: i.banner is None),
        (
            {"id": "1", "native": {"request": {"native": {"assets": []}}}},
            lambda i: isinstance(i.native.request, dict),
        ),
        ({"id": "1", "native": {"request": "{}"}}, lambda i: i.native.request == "{}"),
        ({"id": "1", "tagid": 12}, lambda i: i.tagid == "12"),
        ({"id": "1", "exp": "x"}, lambda i: i.exp is None),  # not critical: dropped
        ({"id": "1", "brandnew": {"x": [1]}, "ext": {"gpid": "a"}}, lambda i: i.id == "1"),
    ],
)
def test_number_and_string_mixups_are_coerced(imp: dict[str, Any], check: Any) -> None:
    assert check(decode(req(imp=[imp])).imp[0])


def test_top_level_mixups() -> None:
    r = decode(req(id=123, at="1", tmax=" 80 ", test=True, bcat="IAB1,IAB2", cur="USD"))
    assert (r.id, r.at, r.tmax, r.test, r.bcat, r.cur) == (
        "123",
        1,
        80,
        1,
        ["IAB1", "IAB2"],
        ["USD"],
    )
    r = decode(req(device={"geo": {"lat": "north", "country": "USA"}, "lmt": "0"}))
    assert r.device is not None and r.device.geo is not None and r.device.geo.lat is None
    assert r.device.lmt == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"id": "r", "imp": [{"id": "1"}, {"id": "1"}]}', "imp[1].id: duplicate"),
        (b'{"id": "r", "imp": [{"id": "1", "bidfloor": "NaN"}]}', "imp[0].bidfloor"),
        (b'{"id": "r", "imp": [{"id": "1", "bidfloor": -0.5}]}', "imp[0].bidfloor"),
        (b'{"id": "r", "imp": [{"id": "1"}], "site": {}, "app": {}}', "site/app/dooh"),
        (b'{"id": "r", "imp": [{"id": "1"}], "app": {}, "dooh": {}}', "site/app/dooh"),
    ],
)
def test_readable_requests_that_break_a_rule_are_invalid_not_malformed(
    body: bytes, reason: str
) -> None:
    # Real exchanges send these as live traffic: they get a counted no-bid, never a 400.
    with pytest.raises(InvalidRequest) as info:
        decode_request(body)
    assert reason in info.value.reason
    assert info.value.request is not None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed JSON"),
        (b"{", "malformed JSON"),
        (b'{"id": "r", "imp": [}', "malformed JSON"),
        (b"null", "must be a JSON object"),
        (b'"\x80"', "malformed JSON"),  # invalid UTF-8 inside a string
        (b'{"id": "\xff", "imp": [{"id": "1"}]}', "malformed JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"imp": [{"id": "1"}]}', "id: required"),
        (b'{"id": "r"}', "imp: required"),
        (b'{"id": "r", "imp": {"id": 1}}', None),  # a lone imp object is read as a list
        (b'{"id": "", "imp": [{"id": "1"}]}', "id: must be a non-empty string"),
        (b'{"id": "r", "imp": []}', "imp: must be a non-empty list"),
        (b'{"id": "r", "imp": [{"id": ""}]}', "imp[0].id: must be a non-empty string"),
        (b'{"id": "r", "imp": [{"id": "1", "bidfloor": "x"}]}', "imp[0].bidfloor: cannot read"),
        (b'{"id": "r", "imp": [{"id": "1", "banner": {"w": "wide"}}]}', "imp[0].banner.w"),
        (b'{"id": "r", "imp": [{"id": "1", "pmp": {"deals": [{"bidfloor": 1}]}}]}', "deals[0]"),
        (b'{"id": "r", "imp": [{"id": "1"}], "bcat": [["IAB1"]]}', "bcat[0]"),
        (b'{"id": "r", "imp": [{"id": "1"}], "regs": {"coppa": "yes"}}', "regs.coppa"),
        (b'{"id": {"a": 1}, "imp": [{"id": "1"}]}', "id: cannot read dict"),
    ],
)
def test_what_a_bid_needs_is_validated_with_the_field_path(body: bytes, reason: str | None) -> None:
    if reason is None:
        assert decode_request(body).imp[0].id == "1"
        return
    with pytest.raises(BadRequest) as info:
        decode_request(body)
    assert reason in info.value.reason
    assert len(info.value.reason) <= 120


def test_25_ext_locations_and_26_promoted_fields() -> None:
    old = decode(
        req(
            regs={"ext": {"gdpr": 1, "us_privacy": "1YN-", "gpp": "DBABM~x", "gpp_sid": [2]}},
            user={"ext": {"consent": "CONSENT"}},
            source={"ext": {"schain": {"complete": 1, "nodes": [{"asi": "a.com", "sid": "1"}]}}},
        )
    )
    new = decode(
        req(
            regs={"gdpr": 1, "us_privacy": "1YN-", "gpp": "DBABM~x", "gpp_sid": [2]},
            user={"consent": "CONSENT"},
            source={"schain": {"complete": 1, "nodes": [{"asi": "a.com", "sid": "1"}]}},
        )
    )
    for r in (old, new):
        assert gdpr_applies(r) == 1
        assert consent_string(r) == "CONSENT"
        assert us_privacy(r) == "1YN-"
        assert gpp(r) == ("DBABM~x", [2])
        chain = schain(r)
        assert chain is not None and chain.complete == 1 and chain.nodes[0].asi == "a.com"
    # the promoted field wins over the extension
    both = decode(req(regs={"gdpr": 0, "ext": {"gdpr": 1}}))
    assert gdpr_applies(both) == 0
    assert gdpr_applies(decode(req())) is None


def test_response_encoding_leaves_out_what_is_unset() -> None:
    resp = BidResponse(
        id="r", seatbid=[SeatBid(bid=[Bid(id="b", impid="1", price=1.25, crid="9")])], cur="USD"
    )
    doc = json.loads(encode_response(resp))
    assert doc == {
        "id": "r",
        "seatbid": [{"bid": [{"id": "b", "impid": "1", "price": 1.25, "crid": "9"}]}],
        "cur": "USD",
    }
    assert msgspec.json.decode(encode_response(resp), type=BidResponse) == resp
