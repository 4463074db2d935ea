"""Where the bidder's data comes from.

- ``CachedSnapshot``: the config snapshot through the cache (``config``/``snapshot``, kept
  coherent by the config watcher and the coherence bus), handed to the pipeline whenever its
  version moves; the last snapshot keeps serving while Postgres is away.
  ``load_portfolio_file`` serves a static portfolio document instead; ``PortfolioFile`` rereads
  it, the campaigns whose JSON text did not change kept as the objects of the last read.
- ``BudgetGate`` (+ ``SpendReader``): refuses a campaign whose recorded spend (``campaign_spend``:
  today in the campaign's timezone, and in total) leaves less than one impression at the bid
  price. It fails closed: before the first read, and when the last good read is older than
  ``max_age``, every campaign with a budget is refused. ``UnlimitedGate`` is for a bidder
  started without Postgres (load tests): it enforces nothing and says so at start.
- Frequency counters from memcached: bidder/frequency.py.

Each adapter records what it does in ``BidderMetrics``; none ever raises into the bid path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec

from bidder.metrics import BidderMetrics
from cache import CONFIG_NAMESPACE, SNAPSHOT_KEY, CacheError, LoadError, Region
from fleet.aio import cancel_and_wait
from fleet.clock import WALL, FleetClock
from fleet.config import Campaign, ConfigSnapshot
from fleet.money import impression_cost_micros

log = logging.getLogger("bidder.sources")

# Rows the 0001 migration seeds into fx_rates: a portfolio file carries no rates of its own.
DEFAULT_FX_PER_USD_MICROS: Final = {
    "USD": 1_000_000,
    "EUR": 920_000,
    "GBP": 790_000,
    "JPY": 150_000_000,
}
_PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def load_portfolio_file(path: Path) -> ConfigSnapshot:
    """A snapshot of a portfolio document (fleet.portfolio format); raises
    ConfigValidationError with every problem found."""
    from fleet.portfolio import read_document, validate

    portfolio = validate(read_document(path))
    return ConfigSnapshot(
        advertisers=portfolio.advertisers,
        campaigns=portfolio.campaigns,
        version=1,
        fx_per_usd_micros=dict(DEFAULT_FX_PER_USD_MICROS),
    )


class _Campaigns(msgspec.Struct):
    """A portfolio document's campaigns as their JSON texts (the rest skipped unparsed)."""

    campaigns: list[msgspec.Raw] = msgspec.field(default_factory=list)


class PortfolioFile:
    """The portfolio file, read again on every change: a campaign whose JSON text is byte for
    byte that of the last read (a BLAKE2b digest of it, kept per campaign id) is the last read's
    ``Campaign`` object. The pipeline's update then recognises it by identity
    (``bidder.index_update.changed_campaigns``) instead of comparing it field by field: at
    20,000 campaigns that comparison was ~80 ms of a one-campaign change's apply, now done in
    the reading thread in ~0.1 s of the several seconds parsing and validating take. YAML
    documents are read whole each time (no texts per campaign to compare)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: dict[int, tuple[bytes, Campaign]] = {}
        self.reused = 0  # campaigns of the last read kept from the one before

    def read(self) -> ConfigSnapshot:
        """A snapshot of the file; raises ConfigValidationError with every problem found."""
        from fleet.errors import ConfigValidationError
        from fleet.portfolio import validate

        if self.path.suffix.lower() != ".json":
            self._last, self.reused = {}, 0
            return load_portfolio_file(self.path)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ConfigValidationError([(str(self.path), exc.strerror or str(exc))]) from exc
        try:
            document = json.loads(data)
            texts = msgspec.json.decode(data, type=_Campaigns).campaigns
        except (json.JSONDecodeError, msgspec.DecodeError):
            return load_portfolio_file(self.path)  # it locates the error (or reads a fixed file)
        portfolio = validate(document)
        del document
        campaigns = list(portfolio.campaigns)
        last: dict[int, tuple[bytes, Campaign]] = {}
        reused = 0
        if len(texts) == len(campaigns):  # validate keeps every campaign, in document order
            for k, (text, campaign) in enumerate(zip(texts, campaigns, strict=True)):
                digest = hashlib.blake2b(text, digest_size=16).digest()
                before = self._last.get(campaign.id)
                if before is not None and before[0] == digest:
                    campaigns[k] = campaign = before[1]
                    reused += 1
                last[campaign.id] = (digest, campaign)
        self._last, self.reused = last, reused
        return ConfigSnapshot(
            advertisers=portfolio.advertisers,
            campaigns=tuple(campaigns),
            version=1,
            fx_per_usd_micros=dict(DEFAULT_FX_PER_USD_MICROS),
        )


class _Backoff:
    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self.first, self.most, self.next = first, most, first

    def reset(self) -> None:
        self.next = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.next)
        self.next = min(self.next * 2, self.most)


class CachedSnapshot:
    """Follows the cache's ``config``/``snapshot`` key and hands every new version to
    ``on_snapshot``; ``current`` is the snapshot last handed over.

    A change reaches the cache from Postgres through the config watcher and the coherence bus
    (an invalidation, then a fill); the region's listener wakes this follower, which reads the
    value (``peek``, else ``get``: a fill through L2/L3) and applies it when its version moved.
    Every ``refresh_interval`` it checks again (the safety net under the bus; the cache's TTL
    refreshes the value itself). When the load fails (Postgres down) the last snapshot keeps
    serving and the follower retries with back-off.

    ``on_snapshot`` runs on the event loop between requests (it should move heavy work off the
    request path itself); a failure in it is logged and the snapshot is retried on the next
    change or check.
    """

    def __init__(
        self,
        region: Region[ConfigSnapshot | None],
        *,
        on_snapshot: Callable[[ConfigSnapshot], Awaitable[None]],
        metrics: BidderMetrics,
        refresh_interval: float = 30.0,
        debounce: float = 0.1,
        load_timeout: float = 10.0,
    ) -> None:
        self.region = region
        self.on_snapshot = on_snapshot
        self.metrics = metrics
        self.refresh_interval = refresh_interval
        self.debounce = debounce
        self.load_timeout = load_timeout
        self.current: ConfigSnapshot | None = None
        self.loads = 0  # snapshots handed over
        self._changed = asyncio.Event()
        self._first = asyncio.Event()
        self._up: bool | None = None
        self._task: asyncio.Task[None] | None = None
        region.add_listener(self._heard)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="config")

    async def wait_loaded(self) -> ConfigSnapshot:
        await self._first.wait()
        assert self.current is not None
        return self.current

    def _heard(self, event: str, key: str, version: int) -> None:
        if key == SNAPSHOT_KEY or event == "flushed":
            current = self.current
            if event != "stored" or current is None or version != current.version:
                self._changed.set()

    async def _run(self) -> None:
        backoff = _Backoff()
        while True:
            self._changed.clear()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except (CacheError, *_PG_ERRORS) as exc:
                if self._up:
                    log.warning("config snapshot unavailable (%s); serving the last one", exc)
                self._up = False
                await backoff.sleep()
                continue
            backoff.reset()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_interval):
                    await self._changed.wait()
                await asyncio.sleep(self.debounce)  # let a burst of changes land

    async def check(self) -> None:
        """Read the snapshot through the cache and apply it if its version moved."""
        snapshot = self.region.peek(SNAPSHOT_KEY)
        if snapshot is None:
            async with asyncio.timeout(self.load_timeout):
                snapshot = await self.region.get(SNAPSHOT_KEY)
        if snapshot is None:
            raise LoadError(CONFIG_NAMESPACE, SNAPSHOT_KEY, "no snapshot")
        if self._up is False:
            log.info("config snapshot available again")
        self._up = True
        current = self.current
        if current is not None and snapshot.version == current.version and snapshot == current:
            self.metrics.snapshot_loads.labels("unchanged").inc()
            return
        try:
            await self.on_snapshot(snapshot)
        except Exception:
            self.metrics.snapshot_loads.labels("rejected").inc()
            log.exception("config snapshot %d could not be applied", snapshot.version)
            return
        self.current = snapshot
        self.loads += 1
        self.metrics.snapshot_loads.labels("applied").inc()
        self._first.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


# -- budgets ------------------------------------------------------------------------------------


def local_day(campaign: Campaign, now: datetime) -> date:
    """The campaign's calendar day at ``now`` (timezone-aware), UTC when its zone is unknown."""
    try:
        return now.astimezone(ZoneInfo(campaign.timezone)).date()
    except (ZoneInfoNotFoundError, ValueError):
        return now.astimezone(UTC).date()


class BudgetGate:
    """The SpendGate fallback: recorded spend against daily and total budgets.

    A budget of 0 means "no limit" (as the schema allows a total of 0 with any daily budget).
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._by_day: dict[tuple[int, date], int] = {}
        self._today: dict[int, int] = {}
        self._total: dict[int, int] = {}
        self._loaded_at: float | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def update(
        self,
        campaigns: Sequence[Campaign],
        by_day: Mapping[tuple[int, date], int],
        totals: Mapping[int, int],
        now: datetime,
        loaded_at: float,
    ) -> int:
        """Install a fresh read; returns how many campaigns it leaves with no budget at all."""
        self._by_day, self._total, self._loaded_at = dict(by_day), dict(totals), loaded_at
        return self.set_campaigns(campaigns, now)

    def set_campaigns(self, campaigns: Sequence[Campaign], now: datetime) -> int:
        """Today's spend of each campaign, on its own calendar (again after a config change)."""
        by_day = self._by_day
        self._today = {c.id: by_day.get((c.id, local_day(c, now)), 0) for c in campaigns}
        return sum(1 for c in campaigns if not self._fits(c, 1))

    def _fits(self, campaign: Campaign, cost: int) -> bool:
        daily, total = campaign.daily_budget_micros, campaign.total_budget_micros
        if daily and self._today.get(campaign.id, 0) + cost > daily:
            return False
        return not (total and self._total.get(campaign.id, 0) + cost > total)

    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        del now, p_win  # the day boundary is applied when spend is read; the worst case
        loaded_at = self._loaded_at
        if loaded_at is None or self._clock() - loaded_at > self.max_age:
            # Fail closed: no trustworthy spend figures, no spending.
            return not (campaign.daily_budget_micros or campaign.total_budget_micros)
        return self._fits(campaign, max(1, impression_cost_micros(price_cpm_micros)))


class UnlimitedGate:
    """For a bidder run without Postgres (load tests): budgets are not enforced."""

    loaded = True

    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        return True


class SpendReader:
    """Reads ``campaign_spend`` every ``interval`` seconds into a BudgetGate."""

    def __init__(
        self,
        dsn: str,
        gate: BudgetGate,
        campaigns: Callable[[], Sequence[Campaign]],
        *,
        metrics: BidderMetrics,
        interval: float = 2.0,
        query_timeout: float = 5.0,
        clock: FleetClock = WALL,
    ) -> None:
        self.dsn = dsn
        self.clock = clock  # the day whose spend counts is the fleet clock's
        self.gate = gate
        self.campaigns = campaigns
        self.metrics = metrics
        self.interval = interval
        self.query_timeout = query_timeout
        self.first_read = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="spend")

    async def _run(self) -> None:
        backoff = _Backoff()
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.query_timeout)
                self.metrics.postgres_up.set(1)
                backoff.reset()
                while True:
                    await self.read_once(conn)
                    await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except _PG_ERRORS as exc:
                self.metrics.postgres_up.set(0)
                self.metrics.spend_loads.labels("error").inc()
                log.warning("reading campaign spend failed (%s); retrying", exc)
            finally:
                if conn is not None:
                    conn.terminate()
            await backoff.sleep()

    async def read_once(self, conn: asyncpg.Connection) -> None:
        now = self.clock.now_utc()
        loaded_at = time.monotonic()
        async with asyncio.timeout(self.query_timeout):
            day_rows = await conn.fetch(
                # a campaign's day is the sum of its spend lanes (one row per lane)
                "SELECT campaign_id, day, sum(spent_micros)::bigint AS spent_micros "
                "FROM campaign_spend WHERE day BETWEEN $1::date AND $2::date GROUP BY 1, 2",
                (now - timedelta(days=1)).date(),
                (now + timedelta(days=1)).date(),
            )
            total_rows = await conn.fetch(
                "SELECT campaign_id, spent_micros FROM campaign_spend_total"
            )
        by_day = {(int(r["campaign_id"]), r["day"]): int(r["spent_micros"]) for r in day_rows}
        totals = {int(r["campaign_id"]): int(r["spent_micros"] or 0) for r in total_rows}
        exhausted = self.gate.update(self.campaigns(), by_day, totals, now, loaded_at)
        self.metrics.spend_blocked.set(exhausted)
        self.metrics.spend_loads.labels("ok").inc()
        self.first_read.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
