"""Partition sets: which event-bus partitions a logger holds, as text and as subscriptions.

A set is written ``all`` or as comma-separated numbers and inclusive ranges (``0-15,32``). Its
canonical text (``0-15,32/64``) names the logger's shard in the aggregates: loggers with disjoint
shards that together cover all P partitions give exact fleet figures.
"""

from __future__ import annotations

from collections.abc import Iterable

from bidlogger.errors import PartitionSpecError
from fleet.events import EVENT_TYPES, partition_prefix


def parse_partitions(spec: str, total: int) -> frozenset[int]:
    """``all``, ``""`` (none) or ``0-15,32``; every number must be in ``[0, total)``."""
    if total < 1:
        raise PartitionSpecError(f"partition count {total} must be at least 1")
    text = spec.strip().lower()
    if text == "all":
        return frozenset(range(total))
    found: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if sep else first
        except ValueError:
            raise PartitionSpecError(f"{part!r} is not a partition or a range a-b") from None
        if first > last:
            raise PartitionSpecError(f"range {part!r} runs backwards")
        if first < 0 or last >= total:
            raise PartitionSpecError(f"{part!r} is outside partitions 0-{total - 1}")
        found.update(range(first, last + 1))
    return frozenset(found)


def canonical(partitions: Iterable[int], total: int) -> str:
    """``0-15,32/64``: sorted, ranges merged, with the partition count."""
    ordered = sorted(set(partitions))
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return f"{','.join(runs)}/{total}"


def prefixes(partitions: Iterable[int], event_types: Iterable[str]) -> list[str]:
    """Topic prefixes to subscribe to: ``ev.0007.`` for every type, else ``ev.0007.<type>``."""
    types = tuple(dict.fromkeys(event_types))
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise PartitionSpecError(f"unknown event type(s) {', '.join(unknown)}")
    every = set(types) == set(EVENT_TYPES)
    out: list[str] = []
    for p in sorted(set(partitions)):
        if every:
            out.append(partition_prefix(p))
        else:
            out.extend(partition_prefix(p) + t for t in types)
    return out


def topic_partition(topic: str) -> int:
    """The partition of an event topic ``ev.0007.bid`` (-1 when it is not one)."""
    _, _, rest = topic.partition(".")
    number, _, _ = rest.partition(".")
    try:
        return int(number)
    except ValueError:
        return -1


def topic_type(topic: str) -> str:
    return topic.rpartition(".")[2]
