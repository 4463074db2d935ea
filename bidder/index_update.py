"""Incremental updates of the targeting index: a few changed campaigns without a rebuild.

Building the index of 20,000 campaigns and 100,000 creatives takes seconds, and the bidder
receives whole snapshots (``bidder.sources.CachedSnapshot``) for every change, most of them to
one campaign. ``apply_changes`` compares the new snapshot with the campaigns the index was built
from and, when few changed, returns a *new* index (the old one keeps serving requests until the
pipeline swaps the reference): every container the update touches is copied first, the changed
and removed campaigns' bits are cleared from the masks their own targeting names, and each new
version is indexed again under the same campaign number, its creatives at new positions after
the last one (a campaign's creatives stay one contiguous run of bits). Positions left behind are
dead: no creative mask admits them again.

The answers equal a full rebuild's up to the order of candidates (tests/bidder/
test_bidder_index_update.py compares candidate sets over many requests). It returns None, and the
caller builds from scratch, when the exchange rates or advertisers changed, when too many
campaigns changed, or when dead positions pass a quarter of all (and 4,096): a rebuild then
compacts them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Final

from bidder.targeting import TargetingIndex, _Masks
from fleet.config import Campaign, ConfigSnapshot

# beyond this many changed campaigns (or 2% of the portfolio, whichever is more) a rebuild wins
MIN_INCREMENTAL: Final = 64
# compact (build anew) when dead positions pass a quarter of all and this many
MAX_DEAD_SHARE: Final = 0.25
MIN_DEAD_COMPACTED: Final = 4096

_MASKS: Final = (
    "country",
    "os",
    "device_type",
    "app_allow",
    "site_allow",
    "app_block",
    "site_block",
    "category",
    "size",
    "segment",
    "deal",
    "cr_format_size",
    "cr_format",
    "cr_domain",
    "cr_category",
    "cr_attr",
    "cr_mime",
    "cr_duration",
)


def changed_campaigns(
    before: Mapping[int, Campaign], snapshot: ConfigSnapshot
) -> tuple[list[Campaign], list[int]]:
    """(campaigns new or different in ``snapshot``, ids no longer in it). One pass; the same
    object is not compared field by field (a snapshot from a cache keeps the objects of the
    campaigns that did not change; one read from a file has new objects for all, and comparing
    them is most of an incremental update's time at 20,000 campaigns)."""
    changed: list[Campaign] = []
    get = before.get
    for c in snapshot.campaigns:
        old = get(c.id)
        if old is not c and old != c:
            changed.append(c)
    added = sum(1 for c in changed if c.id not in before)
    if len(snapshot.campaigns) - added == len(before):
        return changed, []  # every id of ``before`` is still there (ids are unique): none gone
    now = {c.id for c in snapshot.campaigns}
    return changed, [i for i in before if i not in now]


def apply_changes(
    index: TargetingIndex,
    before: Mapping[int, Campaign],
    snapshot: ConfigSnapshot,
    diff: tuple[list[Campaign], list[int]] | None = None,
) -> TargetingIndex | None:
    """The index of ``snapshot`` from ``index`` (built from the campaigns ``before``), or None
    when a full build is due. ``index`` itself is not modified. ``diff``: what
    ``changed_campaigns(before, snapshot)`` gives, when the caller has it already."""
    fx = dict(snapshot.fx_per_usd_micros)
    fx.setdefault("USD", 1_000_000)
    inactive = {a.id for a in snapshot.advertisers if a.status != "active"}
    if fx != index.fx or inactive != index.inactive_advertisers:
        return None
    changed, removed = changed_campaigns(before, snapshot) if diff is None else diff
    if len(changed) + len(removed) > max(MIN_INCREMENTAL, len(before) // 50):
        return None
    new = _copy(index)
    new.snapshot_version = snapshot.version
    gone = {c.id for c in changed} | set(removed)
    new.skipped = [s for s in new.skipped if s[0] not in gone]
    for campaign_id in gone:
        i = new.by_id.pop(campaign_id, None)
        if i is None:
            continue
        e = new.entries[i]
        new._campaign_bits(e, False)
        bit = 1 << i
        new.all_campaigns &= ~bit
        new.always_live &= ~bit
        new.all_creatives &= ~(e.run_mask << e.first_creative)
        new.dead_creatives += len(e.creatives)
    for c in changed:
        i = before_index = index.by_id.get(c.id)
        if i is None:
            i = len(new.entries)
        entry = new._entry(c, i, len(new.creatives))
        if entry is None:
            continue  # no longer bids: its old entry stays, dead
        if before_index is None:
            new.entries.append(entry)
        else:
            new.entries[i] = entry
        for k, cr in enumerate(entry.creatives):
            new._creative_bits(entry.first_creative + k, cr)
        new.creatives.extend(entry.creatives)
        new.all_creatives |= entry.run_mask << entry.first_creative
        flights = len(new._flights)
        new._campaign_bits(entry, True)
        bit = 1 << i
        new.all_campaigns |= bit
        if len(new._flights) == flights:  # no flight dates: always live
            new.always_live |= bit
        new.by_id[c.id] = i
    if new.dead_creatives > max(MAX_DEAD_SHARE * len(new.creatives), MIN_DEAD_COMPACTED):
        return None
    new._boundaries.sort()
    new._durations = sorted(int(d) for d in new.cr_duration.by)
    return new


def _copy(index: TargetingIndex) -> TargetingIndex:
    """A copy sharing nothing an update writes: masks, zones, flights, lists; memos empty."""
    new = copy.copy(index)
    for name in _MASKS:
        setattr(new, name, _Masks(dict(getattr(index, name).by)))
    new._zones = {k: (tz, list(per_hour)) for k, (tz, per_hour) in index._zones.items()}
    new._flights = list(index._flights)
    new._boundaries = list(index._boundaries)
    new.entries = list(index.entries)
    new.creatives = list(index.creatives)
    new.banner_creatives = list(index.banner_creatives)
    new.by_id = dict(index.by_id)
    new.skipped = list(index.skipped)
    new._hours_key = None
    new._hours_mask = 0
    new._live_span = (math.inf, -math.inf)
    new._live_mask = 0
    new._reset_memos()
    return new
