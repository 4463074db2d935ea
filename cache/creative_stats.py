"""The creative performance feed: per-creative impression and click counts, in L1 for the bidder.

The bid loggers write them (table ``creative_stats``, from their aggregates over a recent window)
and publish each new set fleet-wide with ``Cache.put`` on the namespace ``creative``, key
``counts``: memcached (L2) gets the record and the coherence bus carries it to every process's
L1. A process that misses loads the table (L3). Counts are fleet figures, scaled by P/k when the
loggers sample (``estimated``).

The bidder's side, in full::

    from cache.creative_stats import CreativeFeed, creative_namespace

    region = cache.register(creative_namespace(pool))   # before cache.start(); hot: warmed
    performance = CreativeFeed(region)                    # a bidder.creative.CreativePerformance
    choose_creative(creatives, performance, rng)          # stats(id) -> (impressions, clicks)

``CreativeFeed.stats`` never waits: it reads the L1 copy (one ``peek`` per call, a dict lookup);
before the first value arrives it answers None (no history: the prior alone).
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg
import msgspec

from cache.namespace import Loaded, Loader, Namespace
from cache.region import Region

CREATIVE_NAMESPACE: Final = "creative"
COUNTS_KEY: Final = "counts"


class CreativeCounts(msgspec.Struct, frozen=True, array_like=True):
    """One published set. ``counts``: creative id -> (impressions, clicks); ``as_of``: the
    event time (epoch seconds) the window ends at; ``estimated``: scaled from a sample."""

    as_of: float
    window_seconds: int
    estimated: bool
    counts: dict[int, tuple[int, int]]


EMPTY: Final = CreativeCounts(0.0, 0, False, {})

_LOAD = "SELECT creative_id, impressions, clicks, estimated FROM creative_stats"
_AS_OF = "SELECT coalesce(extract(epoch FROM max(updated_at)), 0)::float8 FROM creative_stats"


async def load_counts(conn: Any, window_seconds: int = 0) -> CreativeCounts:
    """The counts as the table holds them (what the feed last published)."""
    rows = await conn.fetch(_LOAD)
    as_of = float(await conn.fetchval(_AS_OF))
    counts = {int(r["creative_id"]): (int(r["impressions"]), int(r["clicks"])) for r in rows}
    estimated = any(bool(r["estimated"]) for r in rows)
    return CreativeCounts(as_of, window_seconds, estimated, counts)


def counts_loader(pool: asyncpg.Pool) -> Loader[CreativeCounts]:
    async def load(key: str) -> Loaded[CreativeCounts]:
        if key != COUNTS_KEY:
            return Loaded(EMPTY)
        async with pool.acquire() as conn:
            return Loaded(await load_counts(conn))

    return load


def creative_namespace(
    pool: asyncpg.Pool, *, ttl: float = 300.0, max_stale: float | None = None
) -> Namespace[CreativeCounts]:
    """``creative``/``counts``: hot (warmed before ready), wall-clock versioned (the newest
    published set wins), refreshed from Postgres after ``ttl`` if no new set came by the bus."""
    return Namespace(
        CREATIVE_NAMESPACE,
        counts_loader(pool),
        type=CreativeCounts,
        ttl=ttl,
        max_stale=max_stale,
        hot=(COUNTS_KEY,),
        versioning="clock",
    )


class CreativeFeed:
    """``stats(creative_id)`` from the L1 copy: the ``CreativePerformance`` the bidder wants."""

    __slots__ = ("_peek",)

    def __init__(self, region: Region[CreativeCounts]) -> None:
        self._peek = region.peek

    def stats(self, creative_id: int) -> tuple[int, int] | None:
        counts: CreativeCounts | None = self._peek(COUNTS_KEY)
        if counts is None:
            return None
        return counts.counts.get(creative_id)
