"""Frequency caps end to end: a real bidder and a real tracker, over HTTP, sharing memcached.

The bidder puts the user key (a keyed hash of the device id) in its notice URLs; the tracker
counts each tracked impression under that key; the bidder reads the same counter before it bids.
After a campaign's cap of impressions for a user, the bidder stops bidding that campaign for that
user, and only for that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest_bidder import RawClient, banner_request, make_settings, run_uv, running_service
from prometheus_client import CollectorRegistry
from pymemcache.client.base import Client as MemcacheClient

from fleet import signing
from fleet.frequency import counter_key
from fleet.pg import free_port
from fleet.portfolio import load_document
from fleet.settings import FleetSettings
from sim.portfolio import catch_all
from tracker.app import make_application, make_server
from tracker.service import TrackerService
from tracker.settings import TrackerSettings

pytestmark = pytest.mark.integration

SIGNING_KEY = "integration-test-signing-key-0123456789"  # the bidder's (conftest_bidder)
USER_SECRET = "integration-test-user-key-secret-0123"
CAP = 3
PERIOD = 3600
L1_TTL = 0.1  # the bidder reuses a counter this long: kept short so that a test is quick
CAPPED_USER = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
OTHER_USER = "0B1C2D3E-4F50-4617-8829-3A4B5C6D7E8F"


def _portfolio() -> dict[str, Any]:
    document = catch_all()
    document["campaigns"][0]["frequency_caps"] = [
        {"max_impressions": CAP, "period_seconds": PERIOD}
    ]
    return document


@contextlib.asynccontextmanager
async def running_tracker(dsn: str, memcached: tuple[str, int]) -> AsyncIterator[int]:
    port = free_port()
    fleet = FleetSettings(
        pg_dsn=dsn,
        memcached=f"{memcached[0]}:{memcached[1]}",
        tracker_url=f"http://127.0.0.1:{port}",
        signing_key=SIGNING_KEY,
        user_key_secret=USER_SECRET,
    )
    settings = TrackerSettings(fleet=fleet)
    registry = CollectorRegistry()
    service = TrackerService(settings, registry, publish_events=False, clock=time.time)
    await service.start(dsn)
    server = make_server(
        lambda: service.tracker,
        make_application(ready=lambda: True, registry=registry),
        settings.http,
        registry,
        time.time,
    )
    await server.listen(port, "127.0.0.1")
    try:
        yield port
    finally:
        await server.shutdown(2.0)
        await service.close()


def _request(rid: str, ifa: str) -> dict[str, Any]:
    req = banner_request(rid)
    req["device"]["ifa"] = ifa
    return req


def _tracked(reply_json: dict[str, Any]) -> tuple[str, str]:
    """The impression pixel's and the billing notice's paths (with their queries), the
    clearing price filled in as an exchange would."""
    (bid,) = reply_json["seatbid"][0]["bid"]
    (pixel,) = re.findall(r'"(http://127\.0\.0\.1:\d+/imp\?[^"]+)"', bid["adm"])
    paths = []
    for url in (pixel, bid["burl"]):
        parts = urlsplit(url.replace("&amp;", "&").replace("${AUCTION_PRICE}", "0.50"))
        paths.append(f"{parts.path}?{parts.query}")
    return paths[0], paths[1]


def test_a_frequency_cap_holds_end_to_end(pg_dsn: str, memcached: tuple[str, int]) -> None:
    async def scenario() -> None:
        await load_document(pg_dsn, _portfolio())
        async with running_tracker(pg_dsn, memcached) as tracker_port:
            settings = make_settings(
                RTBFLEET_PG_DSN=pg_dsn,
                RTBFLEET_MEMCACHED=f"{memcached[0]}:{memcached[1]}",
                RTBFLEET_TRACKER_URL=f"http://127.0.0.1:{tracker_port}",
                RTBFLEET_USER_KEY_SECRET=USER_SECRET,
                RTBFLEET_BIDDER_FREQUENCY_TTL=str(L1_TTL),
                # the bidder's own bids count against the cap until a counter read this long
                # after them: each impression here is tracked within it
                RTBFLEET_BIDDER_FREQUENCY_BID_WINDOW=str(L1_TTL),
            )
            async with running_service(settings) as service:
                bidder, tracker = RawClient(service.port), RawClient(tracker_port)
                counters = MemcacheClient(memcached)
                uk = signing.user_key(CAPPED_USER, USER_SECRET.encode())
                key = counter_key(1, PERIOD, uk)
                try:
                    shown = await _show_until_capped(bidder, tracker, counters, key, uk)
                    assert shown == CAP
                    assert int(counters.get(key)) == CAP
                    # the capped user gets nothing more, however often asked (L1 refreshes
                    # many times over meanwhile); another user still gets the campaign
                    for i in range(20):
                        reply = await bidder.bid(_request(f"after-{i}", CAPPED_USER))
                        assert reply.status == 204, reply.body
                        await asyncio.sleep(L1_TTL / 2)
                    assert await _bid_within(bidder, OTHER_USER, 5.0)
                finally:
                    counters.close()
                    await bidder.close()
                    await tracker.close()

    run_uv(scenario())


async def _bid_within(bidder: RawClient, ifa: str, seconds: float) -> dict[str, Any] | None:
    """The first bid for ``ifa`` within ``seconds`` (the first asks find the counter unknown:
    the bidder skips a capped campaign until it has read the counter)."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        reply = await bidder.bid(_request(f"{ifa[:8]}-{n}-{time.monotonic_ns()}", ifa))
        if reply.status == 200:
            result: dict[str, Any] = reply.json()
            return result
        assert reply.status == 204, reply.body
        await asyncio.sleep(0.02)
    return None


async def _show_until_capped(
    bidder: RawClient, tracker: RawClient, counters: MemcacheClient, key: str, uk: str
) -> int:
    """Bid for the capped user and show each bid (its pixel and its billing notice through the
    tracker) until the bidder bids no more; each impression is waited for in memcached and in
    the bidder's memory (two counter lifetimes) before the next request, as a user's next page
    view would come later. Bounded: at most ``CAP + 3`` impressions."""
    shown = 0
    while shown <= CAP + 2:
        answer = await _bid_within(bidder, CAPPED_USER, 3 * L1_TTL + 2.0)
        if answer is None:
            return shown
        pixel, bill = _tracked(answer)
        assert f"uk={uk}" in pixel and f"uk={uk}" in bill  # the keyed hash, signed
        assert CAPPED_USER.lower() not in pixel.lower()  # never the raw device id
        for path in (pixel, bill):
            reply = await tracker.request("GET", path)
            assert reply.status in (200, 204), (path, reply.status, reply.body)
        shown += 1
        deadline = time.monotonic() + 5.0
        while int(counters.get(key) or 0) < shown:
            assert time.monotonic() < deadline, f"the tracker did not count impression {shown}"
            await asyncio.sleep(0.02)
        await asyncio.sleep(2 * L1_TTL + 0.05)
    return shown
