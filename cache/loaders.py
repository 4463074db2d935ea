"""The ready-made namespace the services share: the config snapshot.

    cache.register(config_namespace(pool))   # peek("config", "snapshot") on the bid path

A plain :class:`~cache.namespace.Namespace`; services may build their own. (Frequency-cap
counters are not a cache namespace: their key layout is the kernel's, ``fleet.frequency``.)
"""

from __future__ import annotations

import asyncpg

from cache.namespace import Loaded, Loader, Namespace
from fleet.config import ConfigSnapshot
from fleet.db.config_store import load_snapshot

CONFIG_NAMESPACE = "config"
SNAPSHOT_KEY = "snapshot"


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
