"""Version arithmetic shared by the tiers: which of two things is newer.

A version is an integer that only grows for a given key. ``source`` namespaces take it from where
the value comes from (config rows carry one from a fleet-wide Postgres sequence); ``clock``
namespaces are stamped with microseconds of wall time, never below what the process already saw
(a hybrid logical clock), so they need host clocks roughly in step.

The one rule that keeps a cache coherent: a value loaded from L3 is stamped with at least the
highest version the loading process had seen for the key when the load *started*. Everything it
had seen was committed before the read began, so the value includes it; anything committed later
is announced with a higher version (the watcher stamps announcements after the commit) and so
replaces the value. An invalidation therefore drops exactly the values loaded before it.
"""

from __future__ import annotations

from typing import Literal

Versioning = Literal["source", "clock"]


def clock_version(now_us: int, floor: int) -> int:
    """A fresh clock version: the wall time in microseconds, but above ``floor``."""
    return max(now_us, floor + 1)


def effective_version(
    loaded: int | None, floor_at_start: int, now_us: int, versioning: Versioning
) -> int:
    """The version a freshly loaded value is stored and announced with (see the module doc)."""
    if versioning == "clock":
        return clock_version(now_us, max(floor_at_start, loaded or 0))
    return max(loaded or 0, floor_at_start)


def supersedes(
    new_version: int,
    new_is_value: bool,
    new_loaded_at: float,
    old_version: int,
    old_is_value: bool,
    old_loaded_at: float,
) -> bool:
    """Whether a record (value or tombstone) may replace another one in L2.

    Higher versions win. At equal versions a value beats a tombstone (the value was loaded after
    its process saw that invalidation) and a later load of the same version beats an earlier one.
    """
    if new_version != old_version:
        return new_version > old_version
    if new_is_value != old_is_value:
        return new_is_value
    return new_is_value and new_loaded_at > old_loaded_at
