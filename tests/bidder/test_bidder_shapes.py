"""An imp's creative shape remembered by its fields (bidder.shapes) against the mask and the
candidates an index with no memos computes: over many generated imps and requests whose fields
collide (the same sizes, ratios, mimes, lists), one key per mask, lazy request masks, bounded
memos."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from bidder.candidates import CandidateSet, candidate_set
from bidder.index_update import apply_changes
from bidder.openrtb import BidRequest, Imp
from bidder.shapes import SHAPES_MEMO, RequestCreatives, imp_fields, imp_shape
from bidder.targeting import TargetingIndex
from fleet.config import Campaign, ConfigSnapshot, Creative, Targeting

_SIZES = [(300, 250), (320, 50), (728, 90), (600, 500), (160, 600), (640, 360)]
_DOMAINS = ["a.example", "b.example", "shop.b.example", "c.example"]
_CATEGORIES = ["IAB1", "IAB1-2", "IAB3", "IAB7-1"]
_MIMES = ["video/mp4", "video/webm", "VIDEO/MP4 "]


def _snapshot(seed: int, campaigns: int = 24) -> ConfigSnapshot:
    rng = random.Random(seed)
    out = []
    n = 0
    for cid in range(1, campaigns + 1):
        creatives = []
        for _ in range(rng.randint(1, 4)):
            n += 1
            fmt = rng.choice(["banner", "banner", "video", "native"])
            w, h = rng.choice(_SIZES)
            creatives.append(
                Creative(
                    id=n,
                    campaign_id=cid,
                    format=fmt,
                    w=w,
                    h=h,
                    markup=rng.choice(["<a href='https://x'></a>", "<img src='http://x/a.png'>"]),
                    adomain=(rng.choice(_DOMAINS),),
                    categories=tuple(rng.sample(_CATEGORIES, rng.randint(0, 2))),
                    attributes=tuple(rng.sample([1, 2, 3, 6], rng.randint(0, 2))),
                    mimes=tuple(rng.sample(_MIMES[:2], rng.randint(1, 2)))
                    if fmt == "video"
                    else (),
                    duration=rng.choice([6, 15, 30]) if fmt == "video" else 0,
                )
            )
        deals = ("d1",) if cid % 5 == 0 else ("d2", "d3") if cid % 7 == 0 else ()
        out.append(
            Campaign(
                id=cid,
                advertiser_id=1,
                name=str(cid),
                daily_budget_micros=1,
                total_budget_micros=1,
                goal_type="CPM",
                goal_price_micros=1_000_000,
                max_bid_cpm_micros=2_000_000 + cid,
                creatives=tuple(creatives),
                targeting=Targeting(deal_ids=deals),
            )
        )
    return ConfigSnapshot(advertisers=(), campaigns=tuple(out), version=1, fx_per_usd_micros={})


def _imp(rng: random.Random, k: int) -> dict[str, Any]:
    """Few values per field, so imps differing in one field meet in the memo."""
    imp: dict[str, Any] = {"id": str(k)}
    if rng.random() < 0.7:
        banner: dict[str, Any] = {}
        formats: list[dict[str, Any]] = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            if rng.random() < 0.7:
                w, h = rng.choice(_SIZES)
                formats.append({"w": w, "h": h})
            else:
                formats.append(
                    {"wratio": rng.choice([6, 32, 1]), "hratio": rng.choice([5, 5, 1])}
                    | ({"wmin": rng.choice([300, 600])} if rng.random() < 0.5 else {})
                )
        if formats:
            banner["format"] = formats
        if rng.random() < 0.3:
            banner["w"], banner["h"] = rng.choice(_SIZES)
        if rng.random() < 0.3:
            banner["wmax"] = rng.choice([320, 728])
        if rng.random() < 0.3:
            banner["hmax"] = rng.choice([250, 600])
        if rng.random() < 0.3:
            banner["battr"] = rng.sample([1, 2, 3], rng.randint(1, 2))
        imp["banner"] = banner
    if rng.random() < 0.35:
        video: dict[str, Any] = {}
        if rng.random() < 0.6:
            video["mimes"] = rng.sample(_MIMES, rng.randint(1, 2))
        if rng.random() < 0.5:
            video["minduration"] = rng.choice([0, 10, 15])
        if rng.random() < 0.5:
            video["maxduration"] = rng.choice([0, 15, 30])
        if rng.random() < 0.3:
            video["battr"] = [rng.choice([2, 6])]
        imp["video"] = video
    if rng.random() < 0.3:
        imp["native"] = {"battr": [rng.choice([1, 3])]} if rng.random() < 0.5 else {}
    if rng.random() < 0.4:
        imp["secure"] = rng.choice([0, 1])
    if rng.random() < 0.25:
        imp["pmp"] = {
            "private_auction": rng.choice([0, 1]),
            "deals": [
                {"id": d, "wseat": rng.choice([[], ["seat1"], ["other"]])}
                | ({"wadomain": ["a.example"]} if rng.random() < 0.3 else {})
                for d in rng.sample(["d1", "d2", "d9"], rng.randint(1, 2))
            ],
        }
    return imp


def _request(rng: random.Random, k: int) -> BidRequest:
    doc: dict[str, Any] = {"id": str(k), "imp": [_imp(rng, j) for j in range(rng.randint(1, 3))]}
    if rng.random() < 0.4:
        doc["badv"] = rng.sample(["b.example", "c.example", "B.Example", "z.example"], 1)
    if rng.random() < 0.4:
        doc["bcat"] = rng.sample(["IAB1", "IAB3", " IAB7-1"], 1)
    return msgspec.convert(doc, BidRequest)


def _columns(s: CandidateSet) -> list[tuple[int, int, list[int]]]:
    return [
        (int(s.entries[k]), int(s.campaign_ids[k]), s.flat[s.starts[k] : s.starts[k + 1]].tolist())
        for k in range(len(s))
    ]


def _listed(index: TargetingIndex, imp: Imp, creatives: int | RequestCreatives) -> list[Any]:
    found = index.candidates(imp, index.all_campaigns, creatives, "seat1")
    return [(c.entry.campaign.id, c.positions, c.deal) for c in found]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_remembered_shape_is_the_direct_one(seed: int) -> None:
    snapshot = _snapshot(seed)
    shared = TargetingIndex(snapshot)
    rng = random.Random(seed)
    requests = [_request(rng, k) for k in range(150)]
    checked = hits = 0
    for req in requests * 2:
        creatives = RequestCreatives(shared, req)
        for imp in req.imp:
            before = len(shared.shape_memos.by_fields)
            shape = imp_shape(shared, imp, creatives)
            hits += len(shared.shape_memos.by_fields) == before
            fresh = TargetingIndex(snapshot)  # no memos
            mask = fresh.imp_creatives(imp) & (fresh.all_creatives & ~fresh.blocked_creatives(req))
            assert (shape.mask if shape is not None else 0) == mask
            # the candidates, as a list and as a set, through the memo and from scratch
            assert _listed(shared, imp, creatives) == _listed(fresh, imp, mask)
            got = candidate_set(shared, imp, shared.all_campaigns, creatives, "seat1")
            want = candidate_set(fresh, imp, fresh.all_campaigns, mask, "seat1")
            assert _columns(got) == _columns(want)
            assert got.deals == want.deals
            checked += 1
    assert checked > 300 and hits > checked // 2


# (media object, field) -> values to try in its place: every field the creatives depend on
_ONE_FIELD: list[tuple[str, str, list[Any]]] = [
    ("banner", "w", [None, 300, 320]),
    ("banner", "h", [None, 250, 50]),
    ("banner", "wmax", [None, 320, 728]),
    ("banner", "hmax", [None, 90, 600]),
    ("banner", "battr", [[], [1], [2, 3]]),
    ("video", "mimes", [[], ["video/mp4"], ["video/webm"]]),
    ("video", "minduration", [None, 10, 20]),
    ("video", "maxduration", [None, 10, 20]),
    ("video", "battr", [[], [2], [6]]),
    ("native", "battr", [[], [1], [3]]),
]
_ONE_FORMAT: list[tuple[str, list[Any]]] = [
    ("w", [None, 300, 600]),
    ("h", [None, 250, 500]),
    ("wratio", [None, 6, 32]),
    ("hratio", [None, 5, 1]),
    ("wmin", [None, 300, 700]),
]


_BASES: list[dict[str, Any]] = [
    {"format": [{"w": 300, "h": 250}, {"wratio": 6, "hratio": 5}]},
    {"format": [{"wratio": 6, "hratio": 5, "wmin": 300}]},
    {"format": [{"w": 320, "h": 50}, {"wratio": 6, "hratio": 5}], "w": 728, "h": 90},
    {"wmax": 728, "hmax": 250},
]


def _one_field_apart(banner: dict[str, Any]) -> list[dict[str, Any]]:
    """An imp and the imps that differ from it in one field (or one media object, or
    ``secure``): a field the shape's key left out would give one of them another's creatives."""
    base: dict[str, Any] = {
        "id": "1",
        "banner": banner,
        "video": {"mimes": ["video/mp4"]},
        "native": {},
    }
    out = [base]
    for media, name, values in _ONE_FIELD:
        for value in values:
            out.append(msgspec.json.decode(msgspec.json.encode(base)))
            out[-1][media][name] = value
    for i in range(len(base["banner"].get("format", []))):
        for name, values in _ONE_FORMAT:
            for value in values:
                out.append(msgspec.json.decode(msgspec.json.encode(base)))
                out[-1]["banner"]["format"][i][name] = value
    for media in ("banner", "video", "native"):
        out.append({k: v for k, v in base.items() if k != media})
    for secure in (0, 1):
        out.append(base | {"secure": secure})
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_imps_one_field_apart_keep_their_own_creatives(seed: int) -> None:
    snapshot = _snapshot(seed, campaigns=40)
    shared = TargetingIndex(snapshot)
    fresh = TargetingIndex(snapshot)
    req = msgspec.convert({"id": "r", "imp": [{"id": "1"}]}, BidRequest)
    docs = [doc for banner in _BASES for doc in _one_field_apart(banner)]
    random.Random(seed).shuffle(docs)
    masks = set()
    for doc in docs + docs[::-1]:
        imp = msgspec.convert(doc, Imp)
        shape = imp_shape(shared, imp, RequestCreatives(shared, req))
        fresh._reset_memos()
        want = fresh.imp_creatives(imp) & fresh.all_creatives
        assert (shape.mask if shape is not None else 0) == want, doc
        masks.add(want)
    assert len(masks) > 10  # the fields do change the creatives


def test_equal_masks_share_one_key_and_a_hit_reads_no_mask() -> None:
    snapshot = _snapshot(4)
    index = TargetingIndex(snapshot)
    plain = msgspec.convert({"id": "1", "banner": {"w": 300, "h": 250}}, Imp)
    # an attribute no creative has: other fields, the same creatives
    unknown_attr = msgspec.convert({"id": "1", "banner": {"w": 300, "h": 250, "battr": [99]}}, Imp)
    assert imp_fields(plain) != imp_fields(unknown_attr)
    req = msgspec.convert({"id": "r", "imp": [{"id": "1"}]}, BidRequest)
    first = imp_shape(index, plain, RequestCreatives(index, req))
    assert first is not None
    assert imp_shape(index, unknown_attr, RequestCreatives(index, req)) is first
    assert imp_shape(index, plain, index.all_creatives) is first  # a mask, interned too
    again = RequestCreatives(index, req)
    assert imp_shape(index, plain, again) is first
    assert again._mask is None  # remembered: the request's mask was never computed
    # the memos keyed by the shape hold that one key
    found = index.imp_campaigns(plain, index.all_campaigns, again)
    assert found is not None and found[1] is first
    assert next(iter(index._by_creatives)) is first


def test_no_creative_left_is_no_shape() -> None:
    index = TargetingIndex(_snapshot(5))
    imp = msgspec.convert({"id": "1", "banner": {"w": 1, "h": 1}}, Imp)
    req = msgspec.convert({"id": "r", "imp": [{"id": "1"}]}, BidRequest)
    assert imp_shape(index, imp, RequestCreatives(index, req)) is None
    assert imp_shape(index, imp, RequestCreatives(index, req)) is None  # remembered as empty
    assert index.imp_campaigns(imp, index.all_campaigns, RequestCreatives(index, req)) is None


def test_the_memos_stay_bounded() -> None:
    index = TargetingIndex(_snapshot(6))
    req = msgspec.convert({"id": "r", "imp": [{"id": "1"}]}, BidRequest)
    for k in range(SHAPES_MEMO * 2 + 10):
        creatives = RequestCreatives(index, msgspec.structs.replace(req, badv=[f"x{k}.example"]))
        imp = msgspec.convert({"id": "1", "banner": {"wmax": 100 + k}}, Imp)
        imp_shape(index, imp, creatives)
        imp_shape(index, imp, index.all_creatives >> (k % 7))
    memos = index.shape_memos
    assert len(memos.by_fields) == SHAPES_MEMO
    assert len(memos.keys) <= SHAPES_MEMO


def test_an_updated_index_starts_with_no_shapes() -> None:
    """An incremental update copies the index: the copy's shapes are its own (new positions)."""
    snapshot = _snapshot(8)
    index = TargetingIndex(snapshot)
    req = msgspec.convert({"id": "r", "imp": [{"id": "1", "banner": {}}]}, BidRequest)
    assert imp_shape(index, req.imp[0], RequestCreatives(index, req)) is not None
    cs = list(snapshot.campaigns)
    cs[0] = msgspec.structs.replace(cs[0], creatives=cs[0].creatives[1:] or cs[1].creatives)
    cs[0] = msgspec.structs.replace(cs[0], version=2)
    changed = msgspec.structs.replace(snapshot, campaigns=tuple(cs), version=2)
    new = apply_changes(index, {c.id: c for c in snapshot.campaigns}, changed)
    assert new is not None and new.shape_memos is not index.shape_memos
    assert not new.shape_memos.by_fields
    shape = imp_shape(new, req.imp[0], RequestCreatives(new, req))
    want = new.imp_creatives(req.imp[0]) & new.all_creatives
    assert shape is not None and shape.mask == want


def test_a_request_of_another_index_is_refused() -> None:
    snapshot = _snapshot(7)
    one, other = TargetingIndex(snapshot), TargetingIndex(snapshot)
    req = msgspec.convert({"id": "r", "imp": [{"id": "1", "banner": {}}]}, BidRequest)
    with pytest.raises(ValueError):
        imp_shape(one, req.imp[0], RequestCreatives(other, req))


def test_long_lists_are_combined_anew_not_remembered() -> None:
    """A request may carry thousands of badv domains or formats (256 KiB of body): a key that
    held them, 256 times over, would be hundreds of MiB. Such shapes are combined anew, and
    still right."""
    from bidder.shapes import MOST_FIELD_CHARS, MOST_FIELD_ITEMS

    snapshot = _snapshot(9)
    index = TargetingIndex(snapshot)
    fresh = TargetingIndex(snapshot)
    domains = [f"d{k}.example" for k in range(MOST_FIELD_ITEMS + 1)]
    long_name = ["x" * (MOST_FIELD_CHARS + 1) + ".example"]
    many_formats = [{"w": 300 + k, "h": 250} for k in range(MOST_FIELD_ITEMS + 1)]
    cases = [
        ({"badv": domains}, {"banner": {"w": 300, "h": 250}}),
        ({"badv": long_name}, {"banner": {"w": 300, "h": 250}}),
        ({"bcat": ["IAB1"] * (MOST_FIELD_ITEMS + 1)}, {"banner": {"w": 300, "h": 250}}),
        ({}, {"banner": {"format": many_formats}}),
        ({}, {"banner": {"format": [{"wratio": 1, "hratio": 1}] * (MOST_FIELD_ITEMS + 1)}}),
    ]
    for extra, media in cases:
        body = {"id": "r", "imp": [{"id": "1", **media}], **extra}
        req = msgspec.convert(body, BidRequest)
        creatives = RequestCreatives(index, req)
        assert creatives.fields is None or imp_fields(req.imp[0]) is None
        for _ in range(2):
            got = imp_shape(index, req.imp[0], creatives)
            direct = fresh.imp_creatives(req.imp[0]) & (
                fresh.all_creatives & ~fresh.blocked_creatives(req)
            )
            assert (got.mask if got is not None else 0) == direct
    memos = index.shape_memos
    assert not memos.by_fields and not memos.fallbacks
