"""The targeting index: which campaigns and creatives may bid on an impression.

Built once per config snapshot (off the hot path), queried per impression with a handful of
dict lookups and bit operations. Campaigns are numbered 0..n-1 and every targeting value maps to
a bitmask (a Python int) of the campaigns that accept it; the campaigns that leave a dimension
open ("any") are OR-ed in. Creatives are numbered so that each campaign's active creatives are
one contiguous run of bits, with masks per format and size, advertiser domain (and its parent
domains, for ``badv``), category (and its tier-1 parent, for ``bcat``), attribute (``battr``),
video mime and duration, and markup that is not secure.

Semantics worth knowing:

- An empty targeting list means "any". ``apps_allowed`` and ``sites_allowed`` together are one
  inventory allow list: a campaign with either only runs on the apps and sites listed (so one
  with only ``apps_allowed`` does not run on sites, nor on DOOH).
- Campaign categories match the inventory's (site/app, section, page, content and publisher
  categories) or their tier-1 parents: a campaign on ``IAB1`` takes ``IAB1-2`` inventory.
- Segments need personalisation: a campaign targeting segments never bids contextually.
- ``hours_of_week`` is evaluated in the campaign's timezone (0 = Monday 00:00).
- Deals: a campaign with ``deal_ids`` bids only through one of those deals, in open and private
  auctions; on a private auction only such campaigns bid. A deal whose ``wseat`` does not list
  our seat is not ours to use; its ``wadomain`` limits the creatives.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from bidder import shapes
from bidder.filters import domain_and_parents, normalize_domain
from bidder.memo import BigKey, recall, remember
from bidder.openrtb import BidRequest, Deal, Imp
from bidder.shapes import RequestCreatives
from fleet.config import Campaign, ConfigSnapshot, Creative

USD = "USD"
# A billion currency units CPM: every bid and value (goal price x 1000 at most) stays within the
# 64-bit integers of the compiled bid loops (bidder/_offers.pyx).
MAX_CAMPAIGN_MICROS: Final = 10**15
_OS_NAMES = {
    "ios": "ios",
    "iphone os": "ios",
    "ipados": "ios",
    "iphone": "ios",
    "ipad": "ios",
    "android": "android",
    "windows": "windows",
    "windows phone": "windows",
    "win": "windows",
    "macos": "macos",
    "mac os": "macos",
    "mac os x": "macos",
    "os x": "macos",
    "osx": "macos",
}


def normalize_os(value: str | None) -> str:
    if not value:
        return ""
    v = value.strip().lower()
    return _OS_NAMES.get(v, v)


def category_and_parent(cat: str) -> tuple[str, ...]:
    """``IAB1-2`` -> (``IAB1-2``, ``IAB1``); ``IAB1`` -> (``IAB1``,)."""
    c = cat.strip()
    head, sep, _ = c.partition("-")
    return (c, head) if sep and head else (c,)


@dataclass(slots=True)
class RequestView:
    """What targeting, scoring and pricing read from a request, normalised once."""

    country: str = ""
    os: str = ""
    device_type: int = 0
    connection_type: int = 0
    inventory: str = ""  # "app" | "site" | "dooh" | ""
    app_bundle: str = ""
    site_domain: str = ""
    publisher_id: str = ""
    categories: frozenset[str] = frozenset()  # with tier-1 parents
    segments: frozenset[str] = frozenset()  # empty unless personalisation is allowed
    personalize: bool = True
    local_hour: int = 0  # hour of day at the user (geo.utcoffset), else UTC
    weekday: int = 0
    exchange: str = ""


def request_view(
    req: BidRequest, *, personalize: bool, wallclock: float, exchange: str = ""
) -> RequestView:
    view = RequestView(personalize=personalize, exchange=exchange)
    device = req.device
    geo = None
    if device is not None:
        view.os = normalize_os(device.os)
        view.device_type = device.devicetype or 0
        view.connection_type = device.connectiontype or 0
        geo = device.geo
    if (geo is None or not geo.country) and req.user is not None and req.user.geo is not None:
        geo = req.user.geo
    offset_min = 0
    if geo is not None:
        view.country = (geo.country or "").strip().upper()
        if geo.utcoffset is not None and -1440 < geo.utcoffset < 1440:
            offset_min = geo.utcoffset
    local = wallclock + offset_min * 60.0
    view.local_hour = int(local // 3600 % 24) if math.isfinite(local) else 0
    view.weekday = int((local // 86400 + 3) % 7) if math.isfinite(local) else 0  # 1970-01-01: Thu
    cats: list[str] = []
    publisher = None
    content = None
    if req.site is not None:
        view.inventory = "site"
        view.site_domain = normalize_domain(req.site.domain or "")
        if not view.site_domain and req.site.page:
            view.site_domain = normalize_domain(req.site.page)
        cats += req.site.cat + req.site.sectioncat + req.site.pagecat
        publisher, content = req.site.publisher, req.site.content
    elif req.app is not None:
        view.inventory = "app"
        view.app_bundle = (req.app.bundle or "").strip()
        cats += req.app.cat + req.app.sectioncat + req.app.pagecat
        publisher, content = req.app.publisher, req.app.content
    elif req.dooh is not None:
        view.inventory = "dooh"
        publisher, content = req.dooh.publisher, req.dooh.content
    if publisher is not None:
        view.publisher_id = publisher.id or ""
        cats += publisher.cat
    if content is not None:
        cats += content.cat
    if cats:
        view.categories = frozenset(p for c in cats for p in category_and_parent(c))
    if personalize and req.user is not None and req.user.data:
        view.segments = frozenset(s.id for d in req.user.data for s in d.segment if s.id)
    return view


@dataclass(frozen=True, slots=True)
class Entry:
    """One indexed campaign, with its money in the bidding currency."""

    index: int
    campaign: Campaign
    creatives: tuple[Creative, ...]  # active creatives, bits first_creative.. in creative masks
    first_creative: int
    max_bid_micros: int  # bidding currency, rounded down
    goal_price_micros: int  # bidding currency
    fx_num: int  # campaign-currency micros = bidding micros * fx_num // fx_den
    fx_den: int
    deal_ids: frozenset[str]
    run_mask: int = 0  # len(creatives) ones
    # creative bits -> positions (tuples of ints: the collector untracks them, never walks them)
    runs: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def to_campaign_currency(self, micros: int) -> int:
        return micros * self.fx_num // self.fx_den


@dataclass(frozen=True, slots=True)
class Candidate:
    """A campaign that may bid on one imp: its eligible creatives (positions in
    ``TargetingIndex.creatives``) and the deal it bids through. Shared between requests
    (memoized by the index): never mutate ``positions``."""

    entry: Entry
    positions: tuple[int, ...]
    deal: Deal | None = None


# Memos evict the least recently used entry when full (never all at once). Their values grow
# with the portfolio (a campaign list, a run per eligible campaign), so they stay small.
_ELIGIBLE_MEMO = 32  # distinct creative masks remembered per index
_CANDIDATES_MEMO = 1024  # distinct (campaigns, creatives) of imps without deals
_NARROW = 52  # creatives a campaign may have for its runs to be found over arrays (float64 sums)
IntArray = npt.NDArray[np.intp]
# by entry: maximum bid, has frequency caps, campaign id
EntryColumns = tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]


def _bits(mask: int) -> Iterable[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _indices(mask: int) -> list[int]:
    """The set bits of a mask, in increasing order: linear in its length (a loop of
    ``mask & -mask`` costs the length per bit, which at 20,000 campaigns is milliseconds)."""
    if not mask:
        return []
    raw = np.frombuffer(mask.to_bytes((mask.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    found: list[int] = np.flatnonzero(np.unpackbits(raw, bitorder="little")).tolist()
    return found


def _epoch(moment: datetime | None, tz: ZoneInfo) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


@dataclass
class _Masks:
    """value -> bitmask of the members that name it."""

    by: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, bit: int) -> None:
        self.by[key] = self.by.get(key, 0) | bit

    def any_of(self, keys: Iterable[str]) -> int:
        by = self.by
        m = 0
        for k in keys:
            m |= by.get(k, 0)
        return m


class TargetingIndex:
    def __init__(self, snapshot: ConfigSnapshot, currency: str = USD) -> None:
        self.currency = currency
        self.snapshot_version = snapshot.version
        self.fx = dict(snapshot.fx_per_usd_micros)
        self.fx.setdefault(USD, 1_000_000)
        self.skipped: list[tuple[int, str]] = []  # (campaign id, why) not indexed
        self.inactive_advertisers = {a.id for a in snapshot.advertisers if a.status != "active"}
        entries: list[Entry] = []
        creatives: list[Creative] = []
        for c in snapshot.campaigns:
            e = self._entry(c, len(entries), len(creatives))
            if e is not None:
                entries.append(e)
                creatives.extend(e.creatives)
        self.entries = entries
        self.by_id = {e.campaign.id: e.index for e in entries}  # live entries only
        self.dead_creatives = 0  # positions left behind by incremental updates
        self.creatives = creatives
        self.all_campaigns = (1 << len(entries)) - 1
        self.all_creatives = (1 << len(creatives)) - 1
        self._build_campaign_masks()
        self._build_creative_masks()
        self._hours_key: int | None = None
        self._hours_mask = 0
        self._live_span = (math.inf, -math.inf)
        self._live_mask = 0
        self._reset_memos()

    def _reset_memos(self) -> None:
        # creative_ok -> (campaigns with an eligible creative, entry index -> its run of them)
        self._by_creatives: OrderedDict[BigKey, tuple[int, dict[int, int]]] = OrderedDict()
        # (campaigns, creative_ok) -> the candidates of an imp without deals
        self._no_deal_candidates: OrderedDict[tuple[int, BigKey], list[Candidate]] = OrderedDict()
        self.shape_memos = shapes.Shapes()  # an imp's creatives by the fields they come from
        # by creative position: its entry and its offset in the entry's run (built on first use)
        self._owner: npt.NDArray[np.intp] | None = None
        self._powers: npt.NDArray[np.float64] | None = None
        # (campaigns, the shape's hash) -> an imp's candidate set (``bidder.candidates``)
        self.candidate_sets: OrderedDict[BigKey, Any] = OrderedDict()
        self.candidate_keys_seen: OrderedDict[int, bool] = OrderedDict()  # their hashes
        # creative_ok -> its positions and their entries (``eligible_positions``)
        self._positions_of: OrderedDict[BigKey, tuple[IntArray, IntArray]] = OrderedDict()
        self._entry_columns: EntryColumns | None = None

    # -- build ----------------------------------------------------------------------------------

    def _entry(self, c: Campaign, index: int, first_creative: int) -> Entry | None:
        """The campaign's entry, or None when it does not bid (why, in ``skipped``)."""
        if c.status != "active" or c.advertiser_id in self.inactive_advertisers:
            return None
        active = tuple(cr for cr in c.creatives if cr.status == "active")
        if not active:
            self.skipped.append((c.id, "no active creative"))
            return None
        currency = self.currency
        if c.currency not in self.fx or currency not in self.fx:
            self.skipped.append((c.id, f"no exchange rate for {c.currency}"))
            return None
        num, den = self.fx[currency], self.fx[c.currency]
        max_bid, goal_price = c.max_bid_cpm_micros * num // den, c.goal_price_micros * num // den
        if not (0 <= max_bid <= MAX_CAMPAIGN_MICROS and 0 <= goal_price <= MAX_CAMPAIGN_MICROS):
            self.skipped.append((c.id, "maximum bid or goal price out of range"))
            return None
        return Entry(
            index=index,
            campaign=c,
            creatives=active,
            first_creative=first_creative,
            max_bid_micros=max_bid,
            goal_price_micros=goal_price,
            fx_num=den,
            fx_den=num,
            deal_ids=frozenset(c.targeting.deal_ids),
            run_mask=(1 << len(active)) - 1,
        )

    def _build_campaign_masks(self) -> None:
        self.country, self.os, self.device_type = _Masks(), _Masks(), _Masks()
        self.app_allow, self.site_allow = _Masks(), _Masks()
        self.app_block, self.site_block = _Masks(), _Masks()
        self.category, self.size, self.segment, self.deal = _Masks(), _Masks(), _Masks(), _Masks()
        self.open_country = self.open_os = self.open_device_type = self.open_inventory = 0
        self.open_category = self.open_size = self.open_segment = self.no_deal = 0
        self._zones: dict[str, tuple[ZoneInfo, list[int]]] = {}
        self._flights: list[tuple[int, float | None, float | None]] = []
        self._boundaries: list[float] = []
        self.with_caps = 0
        for e in self.entries:
            self._campaign_bits(e, True)
        self._boundaries.sort()
        self.always_live = self.all_campaigns
        for bit, _, _ in self._flights:
            self.always_live &= ~bit

    def _campaign_bits(self, e: Entry, on: bool) -> None:
        """Set (or clear) the campaign's bit in every mask its targeting names; flights are
        appended when set (the caller sorts the boundaries), removed when cleared."""
        bit = 1 << e.index
        t = e.campaign.targeting

        def put(masks: _Masks, key: str) -> None:
            masks.by[key] = masks.by.get(key, 0) | bit if on else masks.by.get(key, 0) & ~bit

        for attr, masks, values in (
            ("open_country", self.country, [v.upper() for v in t.countries]),
            ("open_os", self.os, [normalize_os(v) for v in t.os]),
            ("open_device_type", self.device_type, [str(v) for v in t.device_types]),
            ("open_category", self.category, list(t.categories)),
            ("open_size", self.size, list(t.sizes)),
            ("open_segment", self.segment, list(t.segments)),
            ("no_deal", self.deal, list(t.deal_ids)),
        ):
            if values:
                for v in values:
                    put(masks, v)
            else:
                old = getattr(self, attr)
                setattr(self, attr, old | bit if on else old & ~bit)
        if t.apps_allowed or t.sites_allowed:
            for v in t.apps_allowed:
                put(self.app_allow, v)
            for v in t.sites_allowed:
                put(self.site_allow, normalize_domain(v))
        else:
            self.open_inventory = self.open_inventory | bit if on else self.open_inventory & ~bit
        for v in t.apps_blocked:
            put(self.app_block, v)
        for v in t.sites_blocked:
            put(self.site_block, normalize_domain(v))
        if e.campaign.frequency_caps:
            self.with_caps = self.with_caps | bit if on else self.with_caps & ~bit
        try:
            tz = ZoneInfo(e.campaign.timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            tz = ZoneInfo("UTC")
        _, per_hour = self._zones.setdefault(tz.key, (tz, [0] * 168))
        for h in t.hours_of_week or range(168):
            if 0 <= h < 168:
                per_hour[h] = per_hour[h] | bit if on else per_hour[h] & ~bit
        if not on:
            self._flights = [f for f in self._flights if f[0] != bit]
            return
        start = _epoch(e.campaign.flight_start, tz)
        end = _epoch(e.campaign.flight_end, tz)
        if start is not None or end is not None:
            self._flights.append((bit, start, end))
            self._boundaries += [x for x in (start, end) if x is not None]

    def _build_creative_masks(self) -> None:
        self.cr_format_size, self.cr_format = _Masks(), _Masks()
        self.cr_domain, self.cr_category, self.cr_attr = _Masks(), _Masks(), _Masks()
        self.cr_mime, self.cr_duration = _Masks(), _Masks()
        self.cr_insecure = 0
        self.banner_creatives: list[int] = []
        for j, cr in enumerate(self.creatives):
            self._creative_bits(j, cr)
        self._durations = sorted(int(d) for d in self.cr_duration.by)

    def _creative_bits(self, j: int, cr: Creative) -> None:
        """Index the creative at position j (a new position: bits are only ever added)."""
        bit = 1 << j
        self.cr_format.add(cr.format, bit)
        self.cr_format_size.add(f"{cr.format}:{cr.w}x{cr.h}", bit)
        for d in cr.adomain:
            for p in domain_and_parents(normalize_domain(d)):
                self.cr_domain.add(p, bit)
        for c in cr.categories:
            for p in category_and_parent(c):
                self.cr_category.add(p, bit)
        for a in cr.attributes:
            self.cr_attr.add(str(a), bit)
        if cr.format == "video":
            for m in cr.mimes:
                self.cr_mime.add(m.strip().lower(), bit)
            self.cr_duration.add(str(cr.duration), bit)
        if cr.format == "banner":
            self.banner_creatives.append(j)
        if "http://" in cr.markup:
            self.cr_insecure |= bit

    # -- query ----------------------------------------------------------------------------------

    def live(self, wallclock: float) -> int:
        """Campaigns inside their flight at ``wallclock`` (cached between flight boundaries)."""
        lo, hi = self._live_span
        if not (lo <= wallclock < hi):
            mask = self.always_live
            for bit, start, end in self._flights:
                if (start is None or wallclock >= start) and (end is None or wallclock < end):
                    mask |= bit
            k = bisect.bisect_right(self._boundaries, wallclock)
            self._live_span = (
                self._boundaries[k - 1] if k > 0 else -math.inf,
                self._boundaries[k] if k < len(self._boundaries) else math.inf,
            )
            self._live_mask = mask
        return self._live_mask

    def hours(self, wallclock: float) -> int:
        """Campaigns whose dayparting accepts ``wallclock`` in their own timezone."""
        key = int(wallclock // 900)  # every UTC offset in use is a multiple of 15 minutes
        if key != self._hours_key:
            mask = 0
            for tz, per_hour in self._zones.values():
                local = datetime.fromtimestamp(key * 900, UTC).astimezone(tz)
                mask |= per_hour[local.weekday() * 24 + local.hour]
            self._hours_key, self._hours_mask = key, mask
        return self._hours_mask

    def request_mask(self, view: RequestView, wallclock: float) -> int:
        """Campaigns eligible for the request as a whole (imp-independent dimensions)."""
        if not self.entries or not math.isfinite(wallclock):
            return 0
        m = self.live(wallclock) & self.hours(wallclock)
        m &= self.open_country | self.country.by.get(view.country, 0)
        m &= self.open_os | self.os.by.get(view.os, 0)
        m &= self.open_device_type | self.device_type.by.get(str(view.device_type), 0)
        if view.inventory == "app":
            m &= self.open_inventory | self.app_allow.by.get(view.app_bundle, 0)
            m &= ~self.app_block.by.get(view.app_bundle, 0)
        elif view.inventory == "site":
            m &= self.open_inventory | self.site_allow.any_of(domain_and_parents(view.site_domain))
            m &= ~self.site_block.any_of(domain_and_parents(view.site_domain))
        else:
            m &= self.open_inventory
        m &= self.open_category | self.category.any_of(view.categories)
        m &= self.open_segment | (self.segment.any_of(view.segments) if view.personalize else 0)
        return m

    def blocked_creatives(self, req: BidRequest) -> int:
        """Creatives ``badv`` and ``bcat`` rule out (``bidder.shapes.blocked_creatives``)."""
        return shapes.blocked_creatives(self, req)

    def imp_creatives(self, imp: Imp) -> int:
        """Creatives that fit the imp's media objects (``bidder.shapes.imp_creatives``)."""
        return shapes.imp_creatives(self, imp)

    def imp_sizes(self, imp: Imp) -> list[str]:
        sizes = []
        if imp.banner is not None:
            b = imp.banner
            if b.w and b.h:
                sizes.append(f"{b.w}x{b.h}")
            sizes += [f"{f.w}x{f.h}" for f in b.format if f.w and f.h]
        if imp.video is not None and imp.video.w and imp.video.h:
            sizes.append(f"{imp.video.w}x{imp.video.h}")
        return sizes

    def imp_campaigns(
        self, imp: Imp, request_mask: int, creative_mask: int | RequestCreatives, seat: str = ""
    ) -> tuple[int, BigKey, list[Deal]] | None:
        """The campaigns (a mask of entries) with an eligible creative for ``imp``, those
        creatives (the key of a mask of positions, one per mask: ``bidder.shapes``) and the
        imp's deals open to ``seat``; None when no campaign is left. ``creative_mask``: the
        creatives the request leaves, as a mask or as what determines it."""
        if not request_mask:
            return None
        sizes = self.imp_sizes(imp)
        m = request_mask & (self.open_size | self.size.any_of(sizes))
        deals: list[Deal] = []
        private = False
        if imp.pmp is not None:
            private = imp.pmp.private_auction == 1
            deals = [d for d in imp.pmp.deals if not d.wseat or (seat and seat in d.wseat)]
        deal_mask = self.deal.any_of(d.id for d in deals) if deals else 0
        m &= deal_mask if private else (self.no_deal | deal_mask)
        if not m:
            return None
        shape = shapes.imp_shape(self, imp, creative_mask)
        if shape is None:
            return None
        m &= self._eligible(shape)[0]
        return (m, shape, deals) if m else None

    def candidates(
        self,
        imp: Imp,
        request_mask: int,
        creative_mask: int | RequestCreatives,
        seat: str = "",
    ) -> list[Candidate]:
        """Campaigns with at least one eligible creative for ``imp``, each with its deal."""
        found = self.imp_campaigns(imp, request_mask, creative_mask, seat)
        if found is None:
            return []
        m, shape, deals = found
        runs = self._eligible(shape)[1]
        candidate = self._candidate
        if not deals:  # the same campaigns and creatives: the same candidates
            key = (m, shape)
            known = recall(self._no_deal_candidates, key)
            if known is None:
                known = [candidate(i, runs[i]) for i in _indices(m & self.no_deal)]
                remember(self._no_deal_candidates, key, known, _CANDIDATES_MEMO)
            return list(known)
        out: list[Candidate] = []
        entries = self.entries
        for i in _indices(m):
            e = entries[i]
            if not e.deal_ids:
                out.append(candidate(i, runs[i]))
                continue
            deal = next((d for d in deals if d.id in e.deal_ids), None)
            if deal is None:
                continue
            positions = candidate(i, runs[i]).positions
            if deal.wadomain:
                positions = self._with_domains(positions, deal.wadomain)
                if not positions:
                    continue
            out.append(Candidate(e, positions, deal))
        return out

    def _candidate(self, i: int, run: int) -> Candidate:
        """Campaign i's candidate without a deal, for its creatives in ``run`` (bits from
        its first creative). Made when asked: a request reaches a few of thousands, and kept
        for later requests the objects (one per campaign and run seen, up to hundreds of
        thousands) would go through the collector's young generations for minutes, pausing
        the loop for milliseconds at each of its passes. The positions are the entry's, one
        list per run."""
        e = self.entries[i]
        positions = e.runs.get(run)
        if positions is None:
            positions = e.runs[run] = tuple([e.first_creative + k for k in _bits(run)])
        return Candidate(e, positions)

    def _eligible(self, shape: int | BigKey) -> tuple[int, dict[int, int]]:
        """The campaigns with at least one creative in ``shape`` (a creative mask, or its key),
        and by entry index the run of those creatives; memoized per mask (requests repeat a few
        masks). Linear in the creatives, over arrays: each creative adds 2**(its offset in its
        campaign's run) to its campaign's sum (exact in float64 for runs of up to 52
        creatives)."""
        key = shape if isinstance(shape, BigKey) else BigKey(shape)
        hit = recall(self._by_creatives, key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        creative_ok = key.mask
        if self._owner is None:
            self._layout()
        owner, powers = self._owner, self._powers
        runs: dict[int, int] = {}
        if owner is not None and powers is not None:
            positions = np.asarray(_indices(creative_ok), dtype=np.intp)
            sums = np.bincount(owner[positions], powers[positions], minlength=len(self.entries))
            eligible = np.flatnonzero(sums)
            runs = dict(
                zip(eligible.tolist(), sums[eligible].astype(np.int64).tolist(), strict=True)
            )
        else:  # a campaign with more creatives than the arrays handle: one at a time
            for e in self.entries:
                run = (creative_ok >> e.first_creative) & e.run_mask
                if run:
                    runs[e.index] = run
        flags = np.zeros(len(self.entries), dtype=np.uint8)
        flags[list(runs)] = 1
        campaigns = int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")
        hit = (campaigns, runs)
        remember(self._by_creatives, key, hit, _ELIGIBLE_MEMO)
        return hit

    def eligible_positions(self, shape: int | BigKey) -> tuple[IntArray, IntArray] | None:
        """The positions in ``shape`` (a creative mask, or its key; increasing) and the entry of
        each; None when the index has no such arrays (a campaign with more than 52 creatives).
        Memoized per mask; an entry's positions are contiguous."""
        key = shape if isinstance(shape, BigKey) else BigKey(shape)
        hit = recall(self._positions_of, key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        if self._owner is None:
            self._layout()
        if self._owner is None:
            return None
        positions = np.asarray(_indices(key.mask), dtype=np.intp)
        hit = (positions, self._owner[positions])
        remember(self._positions_of, key, hit, _ELIGIBLE_MEMO)
        return hit

    def entry_columns(self) -> EntryColumns:
        """By entry index: maximum bid (bidding currency), has frequency caps, campaign id."""
        if self._entry_columns is None:
            n = len(self.entries)
            es = self.entries
            self._entry_columns = (
                np.fromiter((e.max_bid_micros for e in es), np.int64, n),
                np.fromiter((bool(e.campaign.frequency_caps) for e in es), np.bool_, n),
                np.fromiter((e.campaign.id for e in es), np.int64, n),
            )
        return self._entry_columns

    def _layout(self) -> None:
        """Each position's entry and 2**(its offset in the entry's run), for ``_eligible``."""
        if any(len(e.creatives) > _NARROW for e in self.entries):
            return
        n = len(self.creatives)
        owner = np.zeros(n, dtype=np.intp)
        powers = np.zeros(n, dtype=np.float64)
        for e in self.entries:
            k, f = len(e.creatives), e.first_creative
            owner[f : f + k] = e.index
            powers[f : f + k] = 2.0 ** np.arange(k)
        self._owner, self._powers = owner, powers

    def _with_domains(self, positions: tuple[int, ...], domains: list[str]) -> tuple[int, ...]:
        allowed = self.cr_domain.any_of(normalize_domain(x) for x in domains)
        return tuple([j for j in positions if (allowed >> j) & 1])
