"""Learnt models reaching the bidder: the newest model in Postgres at start and every announced
one after it, swapped into the pipeline; the exported market table behind the pipeline's market
model.

Delivery: the learner stores each model in the ``models`` table (``fleet.db.model_store``) and
invalidates the cache key ``model``/``latest`` (``cache.models``: the newest version, a few
bytes) over the coherence bus. ``ModelFeed`` registers that namespace, hears the invalidation
through a region listener, reads the new version and, when it is newer than the one in use, the
model's bytes from Postgres (off the request path); ``Pipeline.set_model`` swaps it in.
A periodic check covers a lost announcement. A model of a feature set this bidder does not
compute is refused with one log line, and the old model stays.

``LearntMarket`` is what the pipeline holds as its ``MarketPriceModel``: until a model with a
market table arrives, its own in-process ``LogNormalMarket``; afterwards the learnt table for
P(win) and shading. Win and loss notices still reach the in-process model (``observe_*``), but
the learnt table is learnt from the whole fleet's notices by the learner, so it is what prices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from bidder.pipeline import Pipeline
from bidder.pricing import LogNormalMarket
from bidder.scoring import HashedLinearModel
from cache import Cache, CacheError, Region
from cache.models import LATEST_KEY, model_namespace
from fleet.aio import cancel_and_wait
from fleet.db.model_store import load_model
from fleet.features import SCORING_FEATURE_SET, SCORING_FEATURE_SET_VERSION
from fleet.model import MarketTable, ModelFile, ModelFormatError, decode

log = logging.getLogger("bidder.models")

# Postgres or the cache's load failing: the model in use stays, the next check retries.
_UNAVAILABLE = (OSError, asyncpg.PostgresError, TimeoutError, CacheError)


class LearntMarket:
    """The pipeline's market model: the learnt table when one has arrived, else ``fallback``."""

    def __init__(self, fallback: LogNormalMarket | None = None) -> None:
        self.fallback = fallback if fallback is not None else LogNormalMarket()
        self.table: MarketTable | None = None

    def p_win(self, segment: str, bid_micros: int) -> float:
        table = self.table
        if table is None:
            return self.fallback.p_win(segment, bid_micros)
        return table.p_win(segment, bid_micros)

    def params(self, segment: str) -> tuple[float, float]:
        """(mu, sigma) of ln(competing price): what ``bidder.pricing`` shades with."""
        table = self.table
        if table is not None:
            return table.params(segment)
        return self.fallback.params(segment)

    def observe_win(self, segment: str, price_micros: int, exact: bool = True) -> None:
        self.fallback.observe_win(segment, price_micros, exact)

    def observe_loss(self, segment: str, bid_micros: int) -> None:
        self.fallback.observe_loss(segment, bid_micros)


def refusal(f: ModelFile) -> str | None:
    """Why this bidder cannot score with ``f`` (None: it can). A version-1 file names no
    feature set and is taken as computed by this bidder (the model-file fallback)."""
    if not f.feature_set:
        return None
    if (f.feature_set, f.feature_set_version) != (
        SCORING_FEATURE_SET,
        SCORING_FEATURE_SET_VERSION,
    ):
        return (
            f"model {f.version} was learnt on feature set {f.feature_set!r} version "
            f"{f.feature_set_version}; this bidder computes {SCORING_FEATURE_SET!r} version "
            f"{SCORING_FEATURE_SET_VERSION}"
        )
    return None


def accept(data: bytes) -> tuple[HashedLinearModel, MarketTable | None]:
    """The bidder's model (and market table) of model-file bytes; ModelFormatError when the
    bytes are no model or the model cannot be scored here."""
    f = decode(data)
    why = refusal(f)
    if why is not None:
        raise ModelFormatError(why)
    return HashedLinearModel.from_file(f), f.market


class ModelFeed:
    """Keeps the pipeline on the newest stored model. ``start()`` loads it (if any) before the
    bidder takes traffic; ``close()`` stops the watch."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cache: Cache,
        *,
        install: Callable[[HashedLinearModel], None],
        market: LearntMarket,
        check_interval: float = 30.0,
    ) -> None:
        self._pool = pool
        self._install = install
        self._market = market
        self._interval = check_interval
        self._region: Region[int] = cache.register(model_namespace(pool))
        self._region.add_listener(self._on_change)
        self.version = 0
        self.refused: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _on_change(self, event: str, key: str, version: int) -> None:
        if key in (LATEST_KEY, ""):
            self._wake.set()

    async def start(self) -> None:
        """Load the newest stored model now (a bidder that starts later begins with it)."""
        try:
            await self.check()
        except _UNAVAILABLE as exc:  # Postgres down at start: the watch retries
            log.warning("no learnt model loaded at start: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="model-feed")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.check()
            except _UNAVAILABLE as exc:
                log.warning("checking for a new model failed: %s", exc)

    async def check(self) -> bool:
        """Load and install the newest model when it is newer than the one in use."""
        async with self._lock:
            latest = await self._region.get(LATEST_KEY)
            if not latest or latest <= self.version or latest in self.refused:
                return False
            async with self._pool.acquire() as conn:
                stored = await load_model(conn, latest)
            if stored is None:
                return False
            try:
                model, table = await asyncio.to_thread(accept, stored.body)
            except ModelFormatError as exc:
                self.refused.add(latest)
                log.error("model %d refused, keeping model %d: %s", latest, self.version, exc)
                return False
            self._install(model)
            if table is not None:
                self._market.table = table
            self.version = model.version
            log.info(
                "model %d installed (feature set %s, estimator %s)",
                model.version,
                stored.feature_set,
                stored.estimator or "-",
            )
            return True


async def start_model_feed(
    pool: asyncpg.Pool | None,
    cache: Cache | None,
    pipeline: Pipeline | None,
    market: LearntMarket,
    check_interval: float,
) -> ModelFeed | None:
    """The bidder service's hook: a started feed into its pipeline when it reads Postgres
    through the cache (None otherwise: the model-file setting, or priors, stay)."""
    if pool is None or cache is None or pipeline is None:
        return None
    feed = ModelFeed(
        pool, cache, install=pipeline.set_model, market=market, check_interval=check_interval
    )
    await feed.start()
    return feed
