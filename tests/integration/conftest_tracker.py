"""Helpers for the tracker's integration tests: a seeded config database, a tracker built on
real Postgres and memcached, signed notice URLs, and a TCP proxy that can cut Postgres off.

Imported by tests/integration/test_tracker_*.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from prometheus_client import CollectorRegistry

from fleet import signing
from fleet.events import AnyEvent
from tracker.conversions import ConversionStore
from tracker.memcache import FrequencyWriter, hash_client
from tracker.metrics import TrackerMetrics
from tracker.notices import Response, Tracker
from tracker.store import CatalogSource, GroupCommitter, create_pool

KEY = b"integration-signing-key-0123456789"
OLD_KEY = b"integration-previous-key-987654321"
SECRET = b"integration-user-key-secret-000000"
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
BASE = "http://tracker.test"

CAMPAIGNS = """
INSERT INTO advertisers (id, name, domain) VALUES (1, 'Acme', 'acme.example');
INSERT INTO campaigns (id, advertiser_id, name, goal_type, goal_price_micros, max_bid_cpm_micros,
                       daily_budget_micros, total_budget_micros, currency, timezone,
                       attribution_window_seconds)
VALUES (1, 1, 'usd', 'CPI', 2000000, 5000000, 100000000, 0, 'USD', 'UTC', 604800),
       (2, 1, 'eur', 'CPI', 2000000, 5000000, 100000000, 0, 'EUR', 'Asia/Tokyo', 3600);
INSERT INTO creatives (id, campaign_id, format, w, h, markup, adomain, click_url)
VALUES (10, 1, 'banner', 320, 50,
        '<a href="${CLICK_URL}"><img src="x.png"></a><img src="${IMP_URL}"><!--${AUCTION_PRICE}-->',
        '{acme.example}', 'https://mmp.example/c?camp=${CAMPAIGN_ID}&dev=${DEVICE_ID}'),
       (20, 2, 'banner', 320, 50, '<a href="${CLICK_URL}">x</a><img src="${IMP_URL}">',
        '{acme.example}', '');
INSERT INTO frequency_caps (campaign_id, max_impressions, period_seconds)
VALUES (1, 3, 3600), (1, 10, 86400);
"""


async def seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CAMPAIGNS)
    finally:
        await conn.close()


def notice_query(
    kind: str,
    txid: str,
    *,
    campaign: int = 1,
    creative: int = 10,
    bid: int = 3_000_000,
    currency: str = "USD",
    price: str | None = "2.5",
    user_key: str = "",
    key: bytes = KEY,
    expires: float = NOW + 3600,
) -> str:
    """The query string of the notice URL a bidder would have sent, price filled in."""
    params = {
        "txid": txid,
        "cid": str(campaign),
        "crid": str(creative),
        "bid": str(bid),
        "cur": currency,
        "ts": str(int(NOW) - 10),
        "exp": str(int(expires)),
    }
    if user_key:
        params["uk"] = user_key
    url = signing.notice_url(BASE, kind, params, key)
    if price is not None:
        url = url.replace("${AUCTION_PRICE}", price)
    return urlsplit(url).query


@dataclass
class World:
    tracker: Tracker
    pool: asyncpg.Pool
    committer: GroupCommitter
    catalog: CatalogSource
    metrics: TrackerMetrics
    registry: CollectorRegistry
    frequency: FrequencyWriter | None
    events: list[AnyEvent] = field(default_factory=list)

    async def get(self, path: str, query: str, now: float = NOW) -> Response:
        return await self.tracker.handle("GET", path, query, {}, b"", now)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def tracker_world(
    dsn: str,
    memcached: tuple[str, int] | None = None,
    *,
    batch_max: int = 500,
    timeout: float = 2.0,
    lanes: Sequence[int] = (0, 1),
    **extra: Any,
) -> AsyncIterator[World]:
    registry = CollectorRegistry()
    metrics = TrackerMetrics(registry)
    pool = await create_pool(dsn, len(lanes) + 2)
    committer = GroupCommitter(
        pool, metrics, batch_max=batch_max, timeout=timeout, concurrency=len(lanes), lanes=lanes
    )
    committer.start()
    catalog = CatalogSource(pool, metrics, refresh=3600, min_interval=0.0)
    await catalog.start()
    frequency = None
    if memcached is not None:
        frequency = FrequencyWriter(hash_client([memcached], 2), metrics)
    events: list[AnyEvent] = []
    tracker = Tracker(
        keys=signing.KeySet(KEY, (OLD_KEY,)),
        user_secret=SECRET,
        public_url=BASE,
        committer=committer,
        catalog=catalog,
        conversions=ConversionStore(pool, timeout=timeout),
        metrics=metrics,
        frequency=frequency,
        publish=events.append,
        **extra,
    )
    world = World(tracker, pool, committer, catalog, metrics, registry, frequency, events)
    try:
        yield world
    finally:
        await committer.close()
        await catalog.close()
        if frequency is not None:
            await frequency.close()
        pool.terminate()


class TcpProxy:
    """A loopback TCP proxy in this event loop; ``cut()`` drops every connection and refuses
    new ones (Postgres unreachable), ``restore()`` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        self.open = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def proxied_dsn(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)
    user = host[0] + "@" if len(host) == 2 else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()
