"""The model announcement namespace: ``model``/``latest`` is the newest stored model's version.

The learner stores a model in Postgres (``fleet.db.model_store``; too big for memcached) and
invalidates this key with the new version over the coherence bus; every bidder hears it, reloads
the version (a few bytes) and then fetches the model itself. Both sides register it here.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from cache.namespace import Loaded, Loader, Namespace
from fleet.db.model_store import latest_version

MODEL_NAMESPACE: Final = "model"
LATEST_KEY: Final = "latest"


def latest_model_loader(pool: asyncpg.Pool) -> Loader[int]:
    async def load(key: str) -> Loaded[int]:
        if key != LATEST_KEY:
            return Loaded(0, 0)
        async with pool.acquire() as conn:
            version = await latest_version(conn)
        return Loaded(version, version)

    return load


def model_namespace(pool: asyncpg.Pool) -> Namespace[int]:
    """``model``/``latest``: hot (kept refreshed), invalidated by the learner on every export."""
    return Namespace(MODEL_NAMESPACE, latest_model_loader(pool), type=int, hot=(LATEST_KEY,))
