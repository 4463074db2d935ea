"""Invariants of the whole bid path over generated requests (hypothesis)."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from bidder_world import banner_request, load_snapshot, make_world
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from bidder.filters import domain_and_parents, normalize_domain
from bidder.openrtb import BidResponse
from bidder.targeting import category_and_parent

SNAPSHOT = load_snapshot()
CAMPAIGNS = {c.id: c for c in SNAPSHOT.campaigns}
CREATIVES = {cr.id: cr for c in SNAPSHOT.campaigns for cr in c.creatives}
FX = SNAPSHOT.fx_per_usd_micros
WORLD = make_world(SNAPSHOT)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIZES = ["300x250", "320x50", "728x90", "160x600", "970x250", "300x600", "640x360"]
DOMAINS = [
    "shoply.example",
    "www.casinoroyal.example",
    "bankone.example",
    "x.travelly.example",
    "autohaus.example",
]
CATEGORIES = ["IAB22", "IAB25", "IAB25-2", "IAB13", "IAB1", "IAB20", "IAB2"]
DEALS = ["deal-001", "deal-002", "deal-777"]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    w, h = (int(x) for x in draw(st.sampled_from(SIZES)).split("x"))
    cur = draw(st.sampled_from(["USD", "EUR", "GBP"]))
    imp: dict[str, Any] = {
        "id": "1",
        "banner": {"w": w, "h": h, "battr": draw(st.lists(st.integers(1, 5), max_size=3))},
        "bidfloor": draw(st.floats(0, 12, allow_nan=False).map(lambda f: round(f, 4))),
        "bidfloorcur": cur,
    }
    if draw(st.booleans()):
        deals = [
            {"id": d, "bidfloor": draw(st.sampled_from([0, 1.0, 4.5, 9.0])), "bidfloorcur": cur}
            for d in draw(st.lists(st.sampled_from(DEALS), unique=True, max_size=3))
        ]
        imp["pmp"] = {"private_auction": draw(st.integers(0, 1)), "deals": deals}
    req = banner_request(country=draw(st.sampled_from(["USA", "CAN", "DEU", "BRA"])))
    req["imp"] = [imp]
    req["at"] = draw(st.sampled_from([1, 2]))
    req["badv"] = draw(st.lists(st.sampled_from(DOMAINS), max_size=3))
    req["bcat"] = draw(st.lists(st.sampled_from(CATEGORIES), max_size=3))
    if draw(st.booleans()):
        req["user"] = {"id": "u", "data": [{"segment": [{"id": "seg-001"}]}]}
    return req


def _floor_usd(amount: float, cur: str) -> float:
    return amount * FX["USD"] / FX[cur]


@FAST
@given(requests())
def test_bids_respect_floors_maxima_blocks_and_deals(req: dict[str, Any]) -> None:
    answer = WORLD.handle(req)
    assert answer.status in (200, 204) and answer.reason != "internal"
    if answer.status == 204:
        return
    imp = req["imp"][0]
    response = json.loads(answer.body)
    bids = [b for seat in response["seatbid"] for b in seat["bid"]]
    assert len(bids) == 1
    for b in bids:
        campaign = CAMPAIGNS[int(b["cid"])]
        creative = CREATIVES[int(b["crid"])]
        max_usd = campaign.max_bid_cpm_micros * FX["USD"] / FX[campaign.currency] / 1e6
        assert b["price"] <= max_usd + 1e-6
        deals = {d["id"]: d for d in imp.get("pmp", {}).get("deals", [])}
        if campaign.targeting.deal_ids:
            assert b["dealid"] in deals and b["dealid"] in campaign.targeting.deal_ids
        else:
            assert "dealid" not in b
        if imp.get("pmp", {}).get("private_auction") == 1:
            assert b.get("dealid") in deals  # never a private auction without a matching deal
        deal = deals.get(b.get("dealid", ""))
        floor = deal["bidfloor"] if deal and deal["bidfloor"] > 0 else imp["bidfloor"]
        assert b["price"] >= _floor_usd(floor, imp["bidfloorcur"]) - 1e-9
        blocked = {normalize_domain(d) for d in req["badv"]}
        assert not {p for d in creative.adomain for p in domain_and_parents(d)} & blocked
        assert not {p for c in creative.categories for p in category_and_parent(c)} & set(
            req["bcat"]
        )
        assert not set(creative.attributes) & set(imp["banner"]["battr"])
        assert (creative.w, creative.h) == (imp["banner"]["w"], imp["banner"]["h"])


def test_the_generated_requests_do_reach_bids() -> None:
    """The invariants above are not vacuous: bids, deal bids and private deal bids occur."""

    def fresh(r: dict[str, Any]) -> Any:  # a new world each time: deterministic draws
        return make_world(SNAPSHOT).handle(r)

    find(requests(), lambda r: fresh(r).status == 200)
    find(requests(), lambda r: b'"dealid"' in fresh(r).body)
    find(
        requests(),
        lambda r: r["imp"][0].get("pmp", {}).get("private_auction") == 1 and fresh(r).status == 200,
    )
    find(requests(), lambda r: r["at"] == 1 and fresh(r).status == 200)


@FAST
@given(requests(), st.sampled_from(["468x60", "88x31", "1x1"]))
def test_no_eligible_campaign_means_no_bid(req: dict[str, Any], size: str) -> None:
    w, h = (int(x) for x in size.split("x"))
    req["imp"][0]["banner"].update(w=w, h=h)
    answer = WORLD.handle(req)
    assert answer.status == 204 and answer.outcome == "nobid" and answer.bids == []


def _check_never_5xx(body: bytes) -> None:
    answer = WORLD.handle(body)
    assert answer.status in (200, 204, 400)
    assert answer.reason != "internal", answer
    if answer.status == 400:
        assert json.loads(answer.body)["error"]
    if answer.outcome == "bid":
        response = msgspec.json.decode(answer.body, type=BidResponse)
        assert all(math.isfinite(b.price) and b.price > 0 for s in response.seatbid for b in s.bid)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_break_the_bidder(body: bytes) -> None:
    _check_never_5xx(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_never_breaks_the_bidder(doc: Any) -> None:
    _check_never_5xx(json.dumps(doc).encode())


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None)
@given(requests(), st.data())
def test_a_valid_request_with_any_field_replaced_never_breaks_the_bidder(
    req: dict[str, Any], data: st.DataObject
) -> None:
    paths = _paths(req)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        target = req
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue
    _check_never_5xx(json.dumps(req).encode())
