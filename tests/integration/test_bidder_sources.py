"""The bidder's fallbacks against real memcached, and its events on a real ZMQ subscriber."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

from conftest_bidder import (
    SIGNING_KEY,
    RawClient,
    banner_request,
    make_settings,
    metric,
    run_uv,
    running_service,
    write_catch_all,
)
from prometheus_client import CollectorRegistry
from pymemcache.client.base import Client

from bidder.frequency import MemcachedFrequency, memcached_client
from bidder.metrics import BidderMetrics
from fleet.bus import Subscriber
from fleet.events import AuctionEvent, BidEvent, decode
from fleet.frequency import counter_key
from fleet.portfolio import load_document
from fleet.processes import MemcachedProcess
from fleet.signing import user_key
from sim.portfolio import catch_all

IFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"


async def eventually(probe: Any, want: Any, timeout: float = 5.0) -> None:
    started = time.monotonic()
    while (got := probe()) != want:
        assert time.monotonic() - started < timeout, f"still {got!r}, wanted {want!r}"
        await asyncio.sleep(0.01)


def test_frequency_counters_are_read_off_the_loop_and_survive_memcached_dying(
    memcached: tuple[str, int], memcached_server: MemcachedProcess
) -> None:
    async def scenario() -> None:
        direct = Client(memcached)
        direct.set(counter_key(7, 3600, f"i:{IFA}"), b"3")
        registry = CollectorRegistry()
        reader = MemcachedFrequency(
            memcached_client([memcached], 2),
            metrics=BidderMetrics(registry),
            ttl=0.2,
            error_backoff=0.2,
        )
        reader.start()
        direct.close()
        try:
            assert reader.impressions(f"i:{IFA}", 7, 3600) is None  # a miss never waits
            await eventually(lambda: reader.impressions(f"i:{IFA}", 7, 3600), 3)
            await eventually(lambda: reader.impressions("i:never-seen", 7, 3600), 0)
            weird = "u:exchange:user with spaces and ✓ and a very long tail " * 5
            await eventually(lambda: reader.impressions(weird, 7, 3600), 0)
            assert counter_key(7, 3600, weird).startswith("fc:7:3600:h")

            memcached_server.kill()
            for _ in range(30):  # nothing raises, nothing blocks, unknown stays unknown
                assert reader.impressions("i:during-outage", 7, 3600) is None
                await asyncio.sleep(0.02)
            errors = registry.get_sample_value(
                "bidder_frequency_lookups_total", {"result": "fill_error"}
            )
            assert errors and errors >= 1
            memcached_server.start()
            writer = Client(memcached)
            writer.set(counter_key(7, 3600, "i:during-outage"), b"5")
            writer.close()
            await eventually(lambda: reader.impressions("i:during-outage", 7, 3600), 5, 10)
        finally:
            await reader.close()

    run_uv(scenario())


def test_own_bids_count_against_a_cap_until_a_later_read_holds_them(
    memcached: tuple[str, int],
) -> None:
    """A user back before the tracker has counted the last impression is not shown the campaign
    again: the reader adds this process's own bids made since ``bid_window`` before the counter
    was read, and forgets them once a read started that long after them."""

    async def scenario() -> None:
        user = "i:own-bids"
        direct = Client(memcached)
        direct.set(counter_key(9, 86_400, user), b"1")
        direct.close()
        reader = MemcachedFrequency(
            memcached_client([memcached], 2),
            metrics=BidderMetrics(CollectorRegistry()),
            ttl=0.3,
            bid_window=0.5,
        )
        reader.start()
        try:
            reader.impressions(user, 9, 86_400)
            await eventually(lambda: reader.impressions(user, 9, 86_400), 1)
            reader.bid(user, 9, [86_400, 3600])
            assert reader.impressions(user, 9, 86_400) == 2  # counted at once
            reader.bid(user, 9, [86_400])
            assert reader.impressions(user, 9, 86_400) == 3
            assert reader.impressions("i:someone-else", 9, 86_400) is None
            await asyncio.sleep(0.4)  # the counter is read again: the bids are still recent
            assert reader.impressions(user, 9, 86_400) == 3
            # a read that starts more than bid_window after them: the counter is the truth
            # (here the tracker never counted them: they lost)
            await eventually(lambda: reader.impressions(user, 9, 86_400), 1, 5)
        finally:
            await reader.close()

    run_uv(scenario())


def test_frequency_caps_end_to_end(pg_dsn: str, memcached: tuple[str, int]) -> None:
    async def scenario() -> None:
        doc = copy.deepcopy(catch_all())
        doc["campaigns"][0]["frequency_caps"] = [{"max_impressions": 2, "period_seconds": 3600}]
        await load_document(pg_dsn, doc)
        settings = make_settings(
            RTBFLEET_PG_DSN=pg_dsn,
            RTBFLEET_MEMCACHED=f"{memcached[0]}:{memcached[1]}",
            RTBFLEET_BIDDER_FREQUENCY_TTL="0.1",
        )
        request = banner_request("f1")
        request["device"]["ifa"] = IFA
        async with running_service(settings) as service:
            c = RawClient(service.port)
            first = await c.bid(request)
            assert first.status == 204  # not known yet: a capped campaign is skipped
            started = time.monotonic()
            while (await c.bid(request)).status != 200:
                assert time.monotonic() - started < 5
                await asyncio.sleep(0.02)
            writer = Client(memcached)
            # the key the tracker counts under: the keyed hash of the device id (the user key
            # secret is the signing key when none of its own is set)
            writer.set(counter_key(1, 3600, user_key(IFA, SIGNING_KEY.encode())), b"2")
            writer.close()
            while (await c.bid(request)).status != 204:
                assert time.monotonic() - started < 10
                await asyncio.sleep(0.02)
            text = (await c.request("GET", "/metrics")).body.decode()
            assert metric(text, "bidder_requests_total", outcome="nobid", reason="freq_cap") >= 1
            assert metric(text, "bidder_requests_total", outcome="nobid", reason="freq_unknown")
            await c.close()

    run_uv(scenario())


def test_events_reach_a_real_subscriber(tmp_path: Path, zmq_endpoint: str) -> None:
    async def scenario() -> None:
        sub = Subscriber(zmq_endpoint, prefixes=["ev."], bind=True, registry=CollectorRegistry())
        await sub.start()
        settings = make_settings(
            RTBFLEET_BIDDER_PORTFOLIO_FILE=str(write_catch_all(tmp_path)),
            RTBFLEET_BIDDER_PUBLISH_EVENTS="1",
            RTBFLEET_EVENT_BUS_IN=zmq_endpoint,
        )
        try:
            async with running_service(settings) as service:
                c = RawClient(service.port)
                assert (await c.bid(banner_request("e1"))).status == 200
                assert (await c.bid(banner_request("e2", badv=["catchall.example"]))).status == 204
                events: list[Any] = []
                async with asyncio.timeout(10):
                    while len(events) < 3:
                        delivery = await sub.recv()
                        if delivery.kind == "data":
                            events += [decode(p) for p in delivery.payloads]
                await c.close()
        finally:
            await sub.close()
        auctions = {e.txid.split(":")[0]: e for e in events if isinstance(e, AuctionEvent)}
        bids = [e for e in events if isinstance(e, BidEvent)]
        assert auctions["e1"].outcome == "bid" and auctions["e1"].candidates >= 1
        assert auctions["e2"].outcome == "nobid"
        assert len(bids) == 1 and bids[0].txid.startswith("e1:1:")
        assert bids[0].campaign_id == 1 and bids[0].bid_cpm_micros > 0 and bids[0].features

    run_uv(scenario())
