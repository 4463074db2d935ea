"""The bidder's creative choice reads the bid loggers' feed: counts a logger publishes through
the cache (memcached, coherence bus) reach the bidder's L1 and change which creative it shows."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import msgspec
import pytest
from conftest_bidlogger import eventually
from conftest_cache import cache_settings, proxy_process
from prometheus_client import CollectorRegistry

from bidlogger.app import FeedPublisher
from cache.app import Cache
from cache.creative_stats import CreativeFeed, creative_namespace
from fleet.config import ConfigSnapshot

sys.path.insert(0, str(Path(__file__).parents[1] / "bidder"))
from bidder_world import banner_request, make_world

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "bidder" / "fixtures" / "portfolio.json"
DAY = 86_400
NOW = 1_796_000_000.0


def two_creative_snapshot() -> ConfigSnapshot:
    """The bidder fixture with campaign 1's second creative made 300x250 like its first."""
    data = json.loads(FIXTURE.read_text())
    (campaign,) = [c for c in data["campaigns"] if c["id"] == 1]
    for creative in campaign["creatives"]:
        creative["w"], creative["h"] = 300, 250
    return msgspec.convert(data, ConfigSnapshot)


def shown(world: object, n: int) -> Counter[int]:
    """Creatives campaign 1 showed in ``n`` requests."""
    counts: Counter[int] = Counter()
    for k in range(n):
        answer = world.handle(banner_request(id=f"req-{k}"))  # type: ignore[attr-defined]
        counts.update(b.creative_id for b in answer.bids if b.campaign_id == 1)
    return counts


async def test_a_published_count_changes_the_creative_choice(
    pg_dsn: str, memcached: tuple[str, int]
) -> None:
    with proxy_process() as bus:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        logger_cache = Cache(cache_settings(memcached, bus), registry=CollectorRegistry(),
                             origin="bidlogger-feed")  # fmt: skip
        bidder_cache = Cache(cache_settings(memcached, bus), registry=CollectorRegistry(),
                             origin="bidder-feed")  # fmt: skip
        logger_cache.register(creative_namespace(pool))
        feed = CreativeFeed(bidder_cache.register(creative_namespace(pool)))
        try:
            await logger_cache.start()
            await bidder_cache.start()
            await bidder_cache.warm()
            world = make_world(two_creative_snapshot(), performance=feed)
            before = shown(world, 600)
            assert before[101] > 0 and before[102] > 0  # no history: both drawn
            # 102 has a far better click record than 101
            await FeedPublisher(logger_cache, 7 * DAY)(
                {101: (200_000, 20, False), 102: (200_000, 4_000, False)}, NOW
            )
            await eventually(lambda: feed.stats(102) == (200_000, 4_000), 10)
            after = shown(world, 600)
            assert after[102] > 0 and after[101] == 0, (before, after)
        finally:
            await bidder_cache.close()
            await logger_cache.close()
            await pool.close()
