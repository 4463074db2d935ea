"""L1: one namespace's in-process values, bounded, versioned, expired by a coarse clock.

The pure core of the cache: no clock, no I/O. ``now`` (monotonic seconds) is passed in by the
caller; a background tick calls :meth:`L1Store.sweep` a few times a second. That tick is the
coarse clock: a hit never reads the time. Instead the sweep removes what is past its bound and
reports what should be refreshed, so :meth:`L1Store.peek` is a dict lookup, a counter and a flag.

Life of an entry (times from when its value was loaded from L3)::

    fresh (age < ttl) ──▶ stale (ttl ≤ age < ttl + max_stale) ──▶ removed
                              │ served while a refresh runs; kept only if it was read since the
                              │ last tick that looked at it (or it is a hot key), else removed

Invariants:
- an entry's version never goes down; a value older than the key's floor is refused;
- the floor of a key is the highest invalidation version seen for it or for its whole namespace,
  kept (bounded) even when the key holds no value, so a late fill of an old value is refused;
- at most ``max_entries`` values: on overflow the CLOCK hand evicts an entry not read since it
  last passed (hot keys are skipped).
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    """Lifetimes and bounds of one namespace (seconds; see the module doc)."""

    ttl: float
    max_stale: float
    max_entries: int
    refresh_retry: float = 1.0
    # How long an invalidation's floor is remembered for a key (at least): long enough to outlive
    # any fill that was started before it (a load, a message on the bus).
    floor_retention: float = 60.0

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.max_stale < 0 or self.max_entries < 1:
            raise ValueError(f"bad L1 policy {self!r}")


class Entry:
    """One value in L1. ``ref`` is set by every hit and cleared by the sweep and the CLOCK hand."""

    __slots__ = ("due", "fresh_until", "pinned", "ref", "stale_until", "value", "version")

    def __init__(self, value: Any, version: int, fresh_until: float, stale_until: float) -> None:
        self.value = value
        self.version = version
        self.fresh_until = fresh_until
        self.stale_until = stale_until
        self.due = fresh_until
        self.ref = False
        self.pinned = False

    def __repr__(self) -> str:
        return f"Entry(version={self.version}, fresh_until={self.fresh_until:.3f})"


class Offer(enum.Enum):
    """What :meth:`L1Store.offer` did with a value."""

    STORED = "stored"  # new, newer, or the same version loaded more recently
    SAME = "same"  # the same version, not fresher: nothing changed
    OLDER_THAN_FLOOR = "older_than_floor"  # an invalidation newer than the value was seen
    NOT_NEWER = "not_newer"  # L1 already holds a newer version
    TOO_OLD = "too_old"  # the value's age is past its ttl already

    @property
    def usable(self) -> bool:
        return self is Offer.STORED or self is Offer.SAME


@dataclass(frozen=True)
class Invalidated:
    """What :meth:`L1Store.invalidate` did: ``removed`` a value, which was ``hot`` (in use)."""

    applied: bool
    removed: bool
    hot: bool


def _ignore(key: str) -> None:
    return None


class L1Store(Generic[T]):
    """One namespace's values; see the module doc. ``on_miss(key)`` is called by a missing peek."""

    def __init__(
        self,
        policy: Policy,
        hot_keys: Iterable[str] = (),
        on_miss: Callable[[str], None] = _ignore,
    ) -> None:
        self.policy = policy
        self.hot_keys = frozenset(hot_keys)
        self.on_miss = on_miss
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self._get = self.entries.get
        self._floors: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._due: list[tuple[float, str]] = []
        self.namespace_floor = 0
        # Counters read by the metrics collector (plain ints: the hit path cannot afford more).
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # capacity (CLOCK)
        self.expirations = 0  # past ttl and not in use, or past ttl + max_stale
        self.refused = 0

    # -- the hot path -------------------------------------------------------------------------
    def peek(self, key: str) -> T | None:
        """The value, or None on a miss (``on_miss`` is told). Never blocks, never reads a clock."""
        e = self._get(key)
        if e is not None:
            self.hits += 1
            e.ref = True
            return e.value  # type: ignore[no-any-return]
        self.misses += 1
        self.on_miss(key)
        return None

    # -- versions -----------------------------------------------------------------------------
    def floor(self, key: str) -> int:
        """The highest version known to be current or newer: no value below it is accepted."""
        f = self._floors.get(key)
        if f is None or f[0] < self.namespace_floor:
            return self.namespace_floor
        return f[0]

    def version(self, key: str) -> int:
        """The version to beat for ``key``: the higher of its value's version and its floor."""
        e = self._get(key)
        floor = self.floor(key)
        return floor if e is None or e.version < floor else e.version

    def note_floor(self, key: str, version: int, now: float) -> None:
        """Remember that ``version`` exists for ``key`` (an invalidation or a tombstone seen)."""
        old = self._floors.pop(key, None)
        if old is not None and old[0] > version:
            version = old[0]
        self._floors[key] = (version, now + self.policy.floor_retention)
        if len(self._floors) > self.policy.max_entries:
            self._floors.popitem(last=False)

    # -- writes -------------------------------------------------------------------------------
    def offer(self, key: str, value: T, version: int, now: float, age: float = 0.0) -> Offer:
        """Store ``value`` unless something newer is known; ``age`` is seconds since its load."""
        if version < self.floor(key):
            self.refused += 1
            return Offer.OLDER_THAN_FLOOR
        remaining = self.policy.ttl - max(age, 0.0)
        if remaining <= 0:
            return Offer.TOO_OLD
        fresh_until = now + remaining
        e = self._get(key)
        if e is not None:
            if version < e.version:
                self.refused += 1
                return Offer.NOT_NEWER
            if version == e.version and fresh_until <= e.fresh_until:
                return Offer.SAME
            e.value = value
            e.version = version
            e.fresh_until = fresh_until
            e.stale_until = fresh_until + self.policy.max_stale
            self._schedule(e, key, fresh_until)
            return Offer.STORED
        if len(self.entries) >= self.policy.max_entries:
            self._evict_one()
        e = Entry(value, version, fresh_until, fresh_until + self.policy.max_stale)
        e.pinned = key in self.hot_keys
        self.entries[key] = e
        self._schedule(e, key, fresh_until)
        return Offer.STORED

    def invalidate(self, key: str, version: int, now: float) -> Invalidated:
        """Drop ``key``'s value if it is older than ``version``; remember the version."""
        e = self._get(key)
        if e is not None and e.version >= version:
            return Invalidated(applied=False, removed=False, hot=False)
        self.note_floor(key, version, now)
        if e is None:
            return Invalidated(applied=True, removed=False, hot=False)
        del self.entries[key]
        return Invalidated(applied=True, removed=True, hot=e.ref or e.pinned)

    def invalidate_all(self, version: int | None) -> list[str]:
        """Drop every value older than ``version`` (every value when None: nothing can be
        trusted, e.g. after a gap on the bus). Returns the dropped keys that were in use."""
        if version is not None and version > self.namespace_floor:
            self.namespace_floor = version
        hot = []
        for key, e in list(self.entries.items()):
            if version is None or e.version < version:
                del self.entries[key]
                if e.ref or e.pinned:
                    hot.append(key)
        return hot

    def discard(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None

    # -- the tick -----------------------------------------------------------------------------
    def sweep(self, now: float) -> list[str]:
        """Expire what is past its bound; return the keys to refresh (stale and in use)."""
        refresh: list[str] = []
        due = self._due
        policy = self.policy
        while due and due[0][0] <= now:
            when, key = heapq.heappop(due)
            e = self._get(key)
            if e is None or e.due != when:
                continue  # removed or rescheduled since
            if now < e.fresh_until:
                self._schedule(e, key, e.fresh_until)
            elif now >= e.stale_until:
                del self.entries[key]
                self.expirations += 1
            elif e.ref or e.pinned:
                e.ref = False
                refresh.append(key)
                self._schedule(e, key, min(now + policy.refresh_retry, e.stale_until))
            else:
                del self.entries[key]
                self.expirations += 1
        floors = self._floors
        while floors:
            key, (_, until) = next(iter(floors.items()))
            if until > now:
                break
            del floors[key]
        return refresh

    def _schedule(self, e: Entry, key: str, when: float) -> None:
        e.due = when
        heapq.heappush(self._due, (when, key))
        # Superseded schedule items are skipped when popped; rebuild if they pile up.
        if len(self._due) > 4 * len(self.entries) + 1024:
            self._due = [(x.due, k) for k, x in self.entries.items()]
            heapq.heapify(self._due)

    def _evict_one(self) -> None:
        """The CLOCK hand: pass over entries read since it last passed (clearing their flag) and
        hot keys; evict the first other one. Bounded: two turns, then the oldest goes anyway."""
        entries = self.entries
        for _ in range(2 * len(entries)):
            key, e = entries.popitem(last=False)
            if e.ref or e.pinned:
                e.ref = False
                entries[key] = e
                continue
            self.evictions += 1
            return
        if entries:
            entries.popitem(last=False)
            self.evictions += 1

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries
