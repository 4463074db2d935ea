"""An imp's creative shape: the creatives that fit its media objects and that the request's
``badv`` and ``bcat`` leave, keyed by the fields it is computed from.

At 100,000 creatives a shape is a 100,000-bit mask: each operation on it costs microseconds,
hashing it about 6 us and comparing two equal ones as much. Requests repeat a few shapes (the
same media description, the same block lists), so a shape is remembered under small tuples of
those fields (``imp_fields``, ``RequestCreatives.fields``) and its key is interned: equal masks
share one ``BigKey`` per index, which the memos keyed by it (``TargetingIndex._eligible`` and
``eligible_positions``, ``bidder.candidates``, ``bidder.bounds.ShapeTops``) find by identity.
A repeated shape costs the hash of its fields and no operation on the mask.

The masks are computed here too, next to the fields that stand for them: a field the
computation reads that the key leaves out would give one imp another imp's creatives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final, Protocol

from bidder.filters import normalize_domain
from bidder.memo import BigKey, recall, remember
from bidder.openrtb import BidRequest, Format, Imp
from fleet.config import Creative

# shapes remembered per index by their fields, and interned keys: a mask of 100,000 creatives
# is 12.5 KiB, so a full memo holds a few MiB at most
SHAPES_MEMO: Final = 256
_FALLBACK_MEMO: Final = 64  # distinct flexible banner shapes
# Fields are remembered only up to this many list items and characters: a key holds them, and
# a request of 256 KiB can carry tens of thousands of badv domains, which 256 remembered keys
# would keep (hundreds of MiB). Longer lists are combined anew, as the masks were before.
MOST_FIELD_ITEMS: Final = 64
MOST_FIELD_CHARS: Final = 4096


class _MaskTable(Protocol):
    """Value -> bitmask of the creatives that name it (``bidder.targeting``'s tables)."""

    @property
    def by(self) -> dict[str, int]: ...

    def any_of(self, keys: Iterable[str]) -> int: ...


class CreativeIndex(Protocol):
    """What the shapes read of a ``bidder.targeting.TargetingIndex``, named here rather than
    imported: the index imports this module, and the import rules allow no cycle."""

    @property
    def shape_memos(self) -> Shapes: ...
    @property
    def all_creatives(self) -> int: ...
    @property
    def creatives(self) -> list[Creative]: ...
    @property
    def banner_creatives(self) -> list[int]: ...
    @property
    def cr_insecure(self) -> int: ...
    @property
    def _durations(self) -> list[int]: ...
    @property
    def cr_domain(self) -> _MaskTable: ...
    @property
    def cr_category(self) -> _MaskTable: ...
    @property
    def cr_format_size(self) -> _MaskTable: ...
    @property
    def cr_format(self) -> _MaskTable: ...
    @property
    def cr_attr(self) -> _MaskTable: ...
    @property
    def cr_mime(self) -> _MaskTable: ...
    @property
    def cr_duration(self) -> _MaskTable: ...


class Shapes:
    """An index's memos of shapes (made anew with its other memos): fields -> the shape's key,
    mask -> its one key, and the banner fallbacks. The interned keys are as many as the shapes
    and each is touched when its shape is recalled, so the key a remembered shape holds stays
    the one of its mask."""

    __slots__ = ("by_fields", "fallbacks", "keys")

    def __init__(self) -> None:
        self.by_fields: OrderedDict[tuple[Any, ...], BigKey] = OrderedDict()
        self.keys: OrderedDict[BigKey, BigKey] = OrderedDict()
        self.fallbacks: OrderedDict[tuple[Any, ...], int] = OrderedDict()

    def intern(self, mask: int) -> BigKey:
        """The key of ``mask``: the one already made for an equal mask, if remembered."""
        key = BigKey(mask)
        known: BigKey | None = recall(self.keys, key)
        if known is not None:
            return known
        remember(self.keys, key, key, SHAPES_MEMO)
        return key


class RequestCreatives:
    """The creatives a request's ``badv`` and ``bcat`` leave, for one index: the fields that
    determine them (the lists as given) and the mask, computed only when an imp's shape is not
    remembered (two 100,000-bit operations and the block lists' lookups)."""

    __slots__ = ("_mask", "_req", "fields", "index")

    def __init__(self, index: CreativeIndex, req: BidRequest) -> None:
        self.index = index
        self._req = req
        self._mask: int | None = None
        # None: too long to be remembered (``MOST_FIELD_ITEMS``)
        self.fields: tuple[Any, ...] | None = None
        if _small(req.badv, req.bcat):
            self.fields = (tuple(req.badv), tuple(req.bcat))

    @property
    def mask(self) -> int:
        if self._mask is None:
            index = self.index
            self._mask = index.all_creatives & ~blocked_creatives(index, self._req)
        return self._mask


def _small(*lists: list[Any]) -> bool:
    """Whether lists of strings or numbers are short enough for a remembered key."""
    if sum(map(len, lists)) > MOST_FIELD_ITEMS:
        return False
    chars = sum(len(x) for items in lists for x in items if isinstance(x, str))
    return chars <= MOST_FIELD_CHARS


def imp_fields(imp: Imp) -> tuple[Any, ...] | None:
    """Every field ``imp_creatives`` reads, as given (the media objects present, sizes,
    flexible formats and bounds, mimes, durations, ``battr``, ``secure``): equal fields, equal
    creatives. None when its lists are too long to be remembered (``MOST_FIELD_ITEMS``)."""
    b, v, n = imp.banner, imp.video, imp.native
    if not _small(
        [] if b is None else b.format,
        [] if b is None else b.battr,
        [] if v is None else v.mimes,
        [] if v is None else v.battr,
        [] if n is None else n.battr,
    ):
        return None
    return (
        None
        if b is None
        else (
            tuple([(f.w, f.h, f.wratio, f.hratio, f.wmin) for f in b.format]),
            b.w,
            b.h,
            b.wmax,
            b.hmax,
            tuple(b.battr),
        ),
        None if v is None else (tuple(v.mimes), v.minduration, v.maxduration, tuple(v.battr)),
        None if n is None else tuple(n.battr),
        imp.secure == 1,
    )


def imp_shape(index: CreativeIndex, imp: Imp, creatives: int | RequestCreatives) -> BigKey | None:
    """The key of the creatives that fit ``imp`` among ``creatives`` (a mask, or a request's
    unblocked creatives), interned; None when there are none. Memoized by fields for a
    request's creatives; a mask is combined anew."""
    memo: Shapes = index.shape_memos
    if isinstance(creatives, int):
        key = memo.intern(imp_creatives(index, imp) & creatives)
        return key if key.parts[0] else None
    if creatives.index is not index:  # its mask is another index's positions
        raise ValueError("the creatives of a request to another index")
    own = imp_fields(imp)
    if own is None or creatives.fields is None:  # too long to remember: combined anew
        key = memo.intern(imp_creatives(index, imp) & creatives.mask)
    else:
        fields = (own, creatives.fields)
        known: BigKey | None = recall(memo.by_fields, fields)
        if known is None:
            key = memo.intern(imp_creatives(index, imp) & creatives.mask)
            remember(memo.by_fields, fields, key, SHAPES_MEMO)
        else:
            key = known
            try:
                memo.keys.move_to_end(key)
            except KeyError:  # evicted by masks interned directly
                remember(memo.keys, key, key, SHAPES_MEMO)
    return key if key.parts[0] else None


def blocked_creatives(index: CreativeIndex, req: BidRequest) -> int:
    """Creatives ``badv`` (with subdomains) and ``bcat`` (with tier-1 parents) rule out."""
    m = 0
    if req.badv:
        m |= index.cr_domain.any_of(normalize_domain(d) for d in req.badv)
    if req.bcat:
        m |= index.cr_category.any_of(c.strip() for c in req.bcat)
    return m


def imp_creatives(index: CreativeIndex, imp: Imp) -> int:
    """Creatives that fit the imp's media objects (format, size, mime, duration, battr)."""
    m = 0
    if imp.banner is not None:
        b = imp.banner
        sizes = [f"banner:{f.w}x{f.h}" for f in b.format if f.w and f.h]
        if b.w and b.h:
            sizes.append(f"banner:{b.w}x{b.h}")
        bm = index.cr_format_size.any_of(sizes)
        flex = [f for f in b.format if f.wratio and f.hratio]
        if flex or (not sizes and not b.format):
            shape = (b.wmax, b.hmax, tuple((f.wratio, f.hratio, f.wmin) for f in flex))
            key = (*shape, bool(sizes))
            fallbacks = index.shape_memos.fallbacks
            fallback = recall(fallbacks, key)
            if fallback is None:
                fallback = _banner_fallback(index, b.wmax, b.hmax, flex, bool(sizes))
                if len(flex) <= MOST_FIELD_ITEMS:  # a key holds the formats
                    remember(fallbacks, key, fallback, _FALLBACK_MEMO)
            bm |= fallback
        m |= bm & ~index.cr_attr.any_of(str(a) for a in b.battr)
    if imp.video is not None:
        v = imp.video
        vm = index.cr_format.by.get("video", 0)
        if v.mimes:
            vm &= index.cr_mime.any_of(x.strip().lower() for x in v.mimes)
        lo, hi = v.minduration or 0, v.maxduration or 0
        if lo > 0 or hi > 0:
            vm &= index.cr_duration.any_of(
                str(d) for d in index._durations if d >= lo and (hi <= 0 or d <= hi) and d > 0
            )
        m |= vm & ~index.cr_attr.any_of(str(a) for a in v.battr)
    if imp.native is not None:
        nm = index.cr_format.by.get("native", 0)
        m |= nm & ~index.cr_attr.any_of(str(a) for a in imp.native.battr)
    if imp.secure == 1:
        m &= ~index.cr_insecure
    return m


def _banner_fallback(
    index: CreativeIndex, wmax: int | None, hmax: int | None, flex: list[Format], exact: bool
) -> int:
    """Banners without a fixed size: flexible formats (ratio + wmin) or wmax/hmax bounds."""
    m = 0
    creatives = index.creatives
    for j in index.banner_creatives:
        cr = creatives[j]
        if flex:
            for f in flex:
                wr, hr = f.wratio or 0, f.hratio or 0
                if cr.w * hr == cr.h * wr and cr.w >= (f.wmin or 0):
                    m |= 1 << j
        elif not exact and (wmax is None or cr.w <= wmax) and (hmax is None or cr.h <= hmax):
            m |= 1 << j
    return m


__all__ = [
    "MOST_FIELD_CHARS",
    "MOST_FIELD_ITEMS",
    "SHAPES_MEMO",
    "CreativeIndex",
    "RequestCreatives",
    "Shapes",
    "blocked_creatives",
    "imp_creatives",
    "imp_fields",
    "imp_shape",
]
