from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from bidder_world import NOON, load_snapshot

from bidder.openrtb import BidRequest, Imp
from bidder.targeting import TargetingIndex, request_view
from fleet.config import Campaign, ConfigSnapshot, Creative, Targeting


def creative(cid: int, camp: int, w: int = 300, h: int = 250, **kw: Any) -> Creative:
    return Creative(
        id=cid,
        campaign_id=camp,
        format=kw.pop("format", "banner"),
        w=w,
        h=h,
        markup=kw.pop("markup", "<a href='https://x'></a>"),
        adomain=("a.example",),
        **kw,
    )


def campaign(cid: int, *creatives: Creative, **kw: Any) -> Campaign:
    fields: dict[str, Any] = {
        "goal_type": "CPM",
        "goal_price_micros": 1_000_000,
        "max_bid_cpm_micros": 2_000_000,
        **kw,
    }
    return Campaign(
        id=cid,
        advertiser_id=1,
        name=str(cid),
        daily_budget_micros=1,
        total_budget_micros=1,
        creatives=creatives,
        **fields,
    )


def index(*campaigns: Campaign, fx: dict[str, int] | None = None) -> TargetingIndex:
    snap = ConfigSnapshot(
        advertisers=(), campaigns=campaigns, version=1, fx_per_usd_micros=fx or {}
    )
    return TargetingIndex(snap)


def request(**fields: Any) -> BidRequest:
    doc: dict[str, Any] = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    doc.update(fields)
    return msgspec.convert(doc, BidRequest)


def ids(idx: TargetingIndex, req: BidRequest, wallclock: float = NOON) -> set[int]:
    view = request_view(req, personalize=True, wallclock=wallclock)
    cands = idx.candidates(
        req.imp[0],
        idx.request_mask(view, wallclock),
        idx.all_creatives & ~idx.blocked_creatives(req),
    )
    return {c.entry.campaign.id for c in cands}


def test_inventory_allow_lists_are_one_list() -> None:
    apps_only = campaign(1, creative(1, 1), targeting=Targeting(apps_allowed=("com.a",)))
    sites_only = campaign(2, creative(2, 2), targeting=Targeting(sites_allowed=("a.example.com",)))
    anywhere = campaign(3, creative(3, 3), targeting=Targeting(apps_blocked=("com.bad",)))
    idx = index(apps_only, sites_only, anywhere)
    assert ids(idx, request(app={"bundle": "com.a"})) == {1, 3}
    assert ids(idx, request(app={"bundle": "com.bad"})) == set()
    assert ids(idx, request(site={"domain": "www.a.example.com"})) == {2, 3}
    assert ids(idx, request(site={"page": "https://sub.a.example.com/x"})) == {2, 3}
    assert ids(idx, request(dooh={"id": "screen"})) == {3}


def test_categories_sizes_device_and_segments() -> None:
    idx = index(
        campaign(1, creative(1, 1), targeting=Targeting(categories=("IAB1",))),
        campaign(2, creative(2, 2), targeting=Targeting(sizes=("728x90",))),
        campaign(3, creative(3, 3), targeting=Targeting(os=("ios",), device_types=(4,))),
        campaign(4, creative(4, 4), targeting=Targeting(segments=("s1",), countries=("USA",))),
    )
    base = request(
        site={"domain": "x.com", "cat": ["IAB1-5"]},
        device={"os": "iOS", "devicetype": 4},
        user={"data": [{"segment": [{"id": "s1"}]}]},
    )
    assert ids(idx, base) == {1, 3}  # no country: the country-targeted campaign is out
    assert ids(idx, request(site={"domain": "x.com", "content": {"cat": ["IAB1"]}})) == {1}
    both = request(
        imp=[{"id": "1", "banner": {"format": [{"w": 300, "h": 250}, {"w": 728, "h": 90}]}}],
        device={"geo": {"country": "USA"}},
        user={"data": [{"segment": [{"id": "s1"}]}]},
    )
    assert ids(idx, both) == {2, 4}
    view = request_view(both, personalize=False, wallclock=NOON)
    assert not idx.request_mask(view, NOON) >> 3 & 1  # segments need personalisation


def test_flexible_and_unsized_banners() -> None:
    idx = index(
        campaign(1, creative(1, 1, 300, 250), creative(2, 1, 320, 50), creative(3, 1, 600, 500))
    )
    flex = msgspec.convert(
        {"id": "1", "banner": {"format": [{"wratio": 6, "hratio": 5, "wmin": 400}]}}, Imp
    )
    assert idx.imp_creatives(flex) == 0b100
    bounded = msgspec.convert({"id": "1", "banner": {"wmax": 320, "hmax": 250}}, Imp)
    assert idx.imp_creatives(bounded) == 0b011
    anything = msgspec.convert({"id": "1", "banner": {}}, Imp)
    assert idx.imp_creatives(anything) == 0b111


def test_secure_imps_take_secure_markup_only() -> None:
    idx = index(campaign(1, creative(1, 1, markup="<img src='http://x/a.png'>"), creative(2, 1)))
    imp = msgspec.convert({"id": "1", "banner": {"w": 300, "h": 250}, "secure": 1}, Imp)
    assert idx.imp_creatives(imp) == 0b10
    imp = msgspec.convert({"id": "1", "banner": {"w": 300, "h": 250}}, Imp)
    assert idx.imp_creatives(imp) == 0b11


def test_status_currency_and_creatives_decide_what_is_indexed() -> None:
    idx = index(
        campaign(1, creative(1, 1)),
        campaign(2, creative(2, 2), status="paused"),
        campaign(3, creative(3, 3, status="archived")),
        campaign(4, creative(4, 4), currency="CHF"),
        campaign(5, creative(5, 5), currency="EUR"),
        campaign(6, creative(6, 6), max_bid_cpm_micros=10**15 + 1),  # past 64-bit bid loops
        campaign(7, creative(7, 7), goal_type="CPC", goal_price_micros=10**15 + 1),
        campaign(8, creative(8, 8), goal_price_micros=-1),
        fx={"EUR": 800_000},
    )
    assert [e.campaign.id for e in idx.entries] == [1, 5]
    assert {c for c, _ in idx.skipped} == {3, 4, 6, 7, 8}
    eur = idx.entries[1]
    assert eur.max_bid_micros == 2_500_000 and eur.goal_price_micros == 1_250_000
    assert eur.to_campaign_currency(2_500_000) == 2_000_000


def test_dayparting_follows_each_campaign_timezone_and_flights() -> None:
    snap = load_snapshot()
    idx = TargetingIndex(snap)
    tokyo = next(e for e in idx.entries if e.campaign.id == 12).index
    ended = next(e for e in idx.entries if e.campaign.id == 11).index
    for hour_utc, expected in (
        (0, True),
        (2, True),
        (3, False),
        (12, False),
        (21, True),
        (20, False),
    ):
        t = datetime(2026, 11, 10, hour_utc, 30, tzinfo=UTC).timestamp()
        assert bool(idx.hours(t) >> tokyo & 1) is expected, hour_utc
    jan = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
    assert idx.live(jan) >> ended & 1
    assert not idx.live(NOON) >> ended & 1
    assert idx.live(jan) >> ended & 1  # the cache follows the clock both ways
    assert not idx.live(datetime(2026, 2, 1, tzinfo=UTC).timestamp()) >> ended & 1


def test_remembered_candidates_follow_every_mask() -> None:
    """Candidates are memoized per (campaigns, creatives): asking again, with other sizes,
    blocked advertisers or secure imps in between, gives what a fresh index gives."""
    big = creative(1, 1)
    small = creative(2, 1, w=320, h=50)
    other = msgspec.structs.replace(creative(3, 2), adomain=("b.example",))
    insecure = creative(4, 3, markup="<a href='http://x'></a>")
    camps = (campaign(1, big, small), campaign(2, other), campaign(3, insecure))
    shared = index(*camps)
    asks = [
        request(),
        request(imp=[{"id": "1", "banner": {"w": 320, "h": 50}}]),
        request(badv=["b.example"]),
        request(imp=[{"id": "1", "banner": {"w": 300, "h": 250}, "secure": 1}]),
        request(device={"geo": {"country": "USA"}}),
    ]
    for req in asks * 2:
        found = shared.candidates(
            req.imp[0],
            shared.request_mask(request_view(req, personalize=True, wallclock=NOON), NOON),
            shared.all_creatives & ~shared.blocked_creatives(req),
        )
        fresh = index(*camps)
        expected = fresh.candidates(
            req.imp[0],
            fresh.request_mask(request_view(req, personalize=True, wallclock=NOON), NOON),
            fresh.all_creatives & ~fresh.blocked_creatives(req),
        )
        assert [(c.entry.campaign.id, c.positions, c.deal) for c in found] == [
            (c.entry.campaign.id, c.positions, c.deal) for c in expected
        ]
    assert ids(shared, asks[0]) == {1, 2, 3}
    assert ids(shared, asks[1]) == {1}
    assert ids(shared, asks[2]) == {1, 3}
    assert ids(shared, asks[3]) == {1, 2}
