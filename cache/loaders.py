"""Ready-made namespaces the services share: the config snapshot and frequency counters.

    cache.register(config_namespace(pool))   # peek("config", "snapshot") on the bid path
    cache.register(frequency_namespace())    # peek("freq", frequency_key(...)); incr() on a win

Both are plain :class:`~cache.namespace.Namespace` values; services may build their own.
"""

from __future__ import annotations

import asyncpg

from cache.namespace import Loaded, Loader, Namespace
from fleet.config import ConfigSnapshot
from fleet.db.config_store import load_snapshot

CONFIG_NAMESPACE = "config"
SNAPSHOT_KEY = "snapshot"
FREQUENCY_NAMESPACE = "freq"


def snapshot_loader(pool: asyncpg.Pool) -> Loader[ConfigSnapshot | None]:
    """Loads the whole config snapshot (key ``snapshot``) in one repeatable-read transaction;
    its version is the highest row version in it."""

    async def load(key: str) -> Loaded[ConfigSnapshot | None]:
        if key != SNAPSHOT_KEY:
            return Loaded(None, 0)
        async with pool.acquire() as conn:
            snapshot = await load_snapshot(conn)
        return Loaded(snapshot, snapshot.version)

    return load


def config_namespace(
    pool: asyncpg.Pool,
    *,
    ttl: float | None = None,
    max_stale: float | None = None,
) -> Namespace[ConfigSnapshot | None]:
    """``config``/``snapshot``: hot (warmed before ready, kept refreshed), invalidated by the
    watcher on every config change."""
    return Namespace(
        CONFIG_NAMESPACE,
        snapshot_loader(pool),
        type=ConfigSnapshot | None,
        ttl=ttl,
        max_stale=max_stale,
        hot=(SNAPSHOT_KEY,),
    )


def frequency_namespace(
    name: str = FREQUENCY_NAMESPACE,
    *,
    ttl: float = 5.0,
    max_entries: int | None = None,
) -> Namespace[int]:
    """Per-user impression counters counted fleet-wide in memcached (``Cache.incr``). ``ttl`` is
    how long a process trusts its copy of a count that others may have raised."""
    return Namespace(name, None, type=int, ttl=ttl, max_entries=max_entries, counter=True)


def frequency_key(user_id: str, campaign_id: int, period_seconds: int, now: float) -> str:
    """The counter of ``user_id``'s impressions of ``campaign_id`` in the current fixed window of
    ``period_seconds`` (``now``: seconds since the epoch)."""
    window = int(now // period_seconds)
    return f"{user_id}:{campaign_id}:{period_seconds}:{window}"
