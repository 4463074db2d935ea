"""Table tests: tests/bidder/fixtures/cases_*.json, each case a request (or raw bytes), optional
settings, pacing, frequency and clock, and the expected answer, run through the whole pipeline
against the fixture portfolio (fixtures/portfolio.json).

Placeholders expanded before sending: ``{"$tcf": {...}}`` becomes a TCF v2 string built by
tcf_encoder.encode_tcf, ``{"$gpp": {"<section id>": ...}}`` a GPP string and
``{"$usnat": {...}}`` a US national section."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest
from bidder_world import KEY, NOON, make_world
from tcf_encoder import encode_gpp, encode_tcf, encode_usnat

from bidder.openrtb import BidResponse
from fleet import signing

FIXTURES = Path(__file__).parent / "fixtures"


def _cases() -> list[Any]:
    params = []
    for path in sorted(FIXTURES.glob("cases_*.json")):
        for case in json.loads(path.read_text())["cases"]:
            params.append(pytest.param(case, id=f"{path.stem[6:]}: {case['name']}"))
    return params


def expand(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$tcf"}:
            return encode_tcf(**value["$tcf"])
        if set(value) == {"$gpp"}:
            return encode_gpp({int(k): expand(v) for k, v in value["$gpp"].items()})
        if set(value) == {"$usnat"}:
            return encode_usnat(**value["$usnat"])
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def _verify_url(url: str, kind: str, wallclock: float) -> dict[str, str]:
    parts = urlsplit(url)
    assert parts.path == f"/{kind}"
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = params.pop(signing.SIGNATURE)
    assert params[signing.KIND] == kind
    assert signing.verify(params, signature, KEY, wallclock)
    assert not signing.verify({**params, signing.BID: "99999999"}, signature, KEY, wallclock)
    return params


@pytest.mark.parametrize("case", _cases())
def test_fixture(case: dict[str, Any]) -> None:
    settings: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in case.get("settings", {}).items()
    }
    world = make_world(**settings)
    world.gate.denied = set(case.get("gate_deny", []))
    world.frequency.counts = {int(k): v for k, v in case.get("frequency", {}).items()}
    wallclock = NOON
    if "wallclock" in case:
        wallclock = datetime.fromisoformat(case["wallclock"].replace("Z", "+00:00")).timestamp()
    body = case["raw"].encode() if "raw" in case else json.dumps(expand(case["request"])).encode()

    answer = world.handle(body, spent_ms=case.get("spent_ms", 0), wallclock=wallclock)

    expect = case["expect"]
    assert answer.status == expect["status"], (answer.reason, answer.body[:300])
    assert answer.outcome == expect["outcome"]
    assert answer.reason != "internal"
    if "reason" in expect:
        assert answer.reason == expect["reason"]
    if "nbr" in expect:
        assert answer.nbr == expect["nbr"]
    if answer.status == 204:
        assert answer.body == b""
        assert answer.bids == []
    if answer.status == 400:
        error = json.loads(answer.body)["error"]
        assert expect["error_contains"] in error
    if "body" in expect:
        assert json.loads(answer.body) == expect["body"]
    assert answer.events, "every answer carries its auction event"
    if answer.outcome != "bid":
        return
    response = msgspec.json.decode(answer.body, type=BidResponse)
    assert response.id == expect.get("response_id", json.loads(body)["id"])
    bids = [b for seat in response.seatbid for b in seat.bid]
    assert len(bids) == len(expect["bids"]) == len(answer.bids)
    if expect.get("distinct_cids"):
        assert len({b.cid for b in bids}) == len(bids)
    for bid, want in zip(bids, expect["bids"], strict=True):
        _check_bid(bid, want, response, wallclock)
    # one BidEvent per bid, after the auction event, carrying the features scored
    assert [type(e).__name__ for e in answer.events] == ["AuctionEvent"] + ["BidEvent"] * len(bids)
    for event, bid in zip(answer.events[1:], bids, strict=True):
        assert event.txid == bid.id
        assert any(f.startswith("campaign=") for f in event.features)  # type: ignore[union-attr]


def _check_bid(bid: Any, want: dict[str, Any], response: BidResponse, wallclock: float) -> None:
    if "cid_in" in want:
        assert int(bid.cid) in want["cid_in"], bid.cid
    for key in ("crid", "impid", "dealid", "mtype", "w", "h"):
        if key in want:
            assert getattr(bid, key) == want[key], key
    if "price" in want:
        assert bid.price == pytest.approx(want["price"], abs=1e-6)
    if "price_min" in want:
        assert bid.price >= want["price_min"] - 1e-9
    if "price_max" in want:
        assert bid.price <= want["price_max"] + 1e-9
    if "cur" in want:
        assert response.cur == want["cur"]
    if "adm" in want:
        assert bid.adm == want["adm"]
    if "adm_contains" in want:
        assert bid.adm is not None and want["adm_contains"] in bid.adm
    if bid.adm is not None:
        assert "${IMP_URL}" not in bid.adm and "${CLICK_URL}" not in bid.adm
    if "nurl_contains" in want:
        assert want["nurl_contains"] in bid.nurl
    assert bid.id.endswith(":bidder-0") and f":{bid.impid}:" in bid.id
    for kind, url in (("win", bid.nurl), ("bill", bid.burl), ("loss", bid.lurl)):
        params = _verify_url(url.split("&price=")[0], kind, wallclock)
        assert params[signing.TXID] == bid.id
        assert params[signing.CAMPAIGN] == bid.cid and params[signing.CREATIVE] == bid.crid
        assert int(params[signing.BID]) == round(bid.price * 1_000_000)
    assert "price=${AUCTION_PRICE}" in bid.burl
    assert "loss=${AUCTION_LOSS}" in bid.lurl
