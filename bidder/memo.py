"""The bid path's memos: least-recently-used dictionaries (``remember``, ``recall``: the
oldest entry goes when one is full, never all at once) and keys of big integer masks hashed
once (``BigKey``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class BigKey:
    """A memo key made of big integers (masks of 20,000 campaigns or 100,000 creatives),
    hashed once: Python hashes an int anew on every lookup, about 6 us for a mask of
    100,000 creatives, and an imp looks its creative mask up in several memos."""

    __slots__ = ("_hash", "parts")

    def __init__(self, *parts: int) -> None:
        self.parts = parts
        self._hash = hash(parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BigKey) and self._hash == other._hash and self.parts == other.parts

    @property
    def mask(self) -> int:
        """The first part: the mask of a one-part key."""
        return self.parts[0]


def remember(memo: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    memo[key] = value
    if len(memo) > size:
        memo.popitem(last=False)


def recall(memo: OrderedDict[Any, Any], key: Any) -> Any:
    value = memo.get(key)
    if value is not None:
        memo.move_to_end(key)
    return value


__all__ = ["BigKey", "recall", "remember"]
