"""The tracker's service wiring on real components: events on a real ZMQ subscriber in the bid's
partition, frequency counters where the bidder's reader looks for them on two memcached
servers, and spend in SQL equal to the pure conversion for many prices and rates."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import asyncpg
import pytest
from conftest_tracker import KEY, NOW, notice_query, seed, tracker_world
from prometheus_client import CollectorRegistry
from pymemcache.client.base import Client

from bidder.frequency import ShardedMemcached
from fleet.bus import Subscriber
from fleet.events import BillingEvent, ImpressionEvent, decode, partition_of, partition_prefix
from fleet.frequency import counter_key
from fleet.pg import free_port
from fleet.processes import MemcachedProcess
from fleet.settings import FleetSettings
from tracker.memcache import FrequencyWriter, hash_client
from tracker.metrics import TrackerMetrics
from tracker.service import TrackerService
from tracker.settings import TrackerSettings
from tracker.spend import campaign_cost

pytestmark = pytest.mark.integration


async def test_the_service_publishes_each_counted_notice_in_its_partition(
    pg_dsn: str, zmq_endpoint: str
) -> None:
    await seed(pg_dsn)
    txid = "s1:1:bidder-3"
    sub = Subscriber(
        zmq_endpoint,
        prefixes=[partition_prefix(partition_of(txid))],
        bind=True,
        registry=CollectorRegistry(),
    )
    await sub.start()
    settings = TrackerSettings(
        fleet=dataclasses.replace(
            FleetSettings(), memcached="", event_bus_in=zmq_endpoint, signing_key=KEY.decode()
        ),
    )
    service = TrackerService(settings, CollectorRegistry(), clock=lambda: NOW)
    try:
        tracker = await service.start(pg_dsn)
        assert service.pool is not None  # every commit lane's connection opened at start
        assert service.pool.get_size() >= settings.batch_concurrency + 1
        for path, kind in (("/bill", "bill"), ("/bill", "bill"), ("/imp", "imp")):
            response = await tracker.handle("GET", path, notice_query(kind, txid), {}, b"", NOW)
            assert response.status in (200, 204)
        events: list[Any] = []
        async with asyncio.timeout(10):
            while len(events) < 2:
                delivery = await sub.recv()
                if delivery.kind == "data":
                    events += [decode(p) for p in delivery.payloads]
    finally:
        await service.close()
        await sub.close()
    assert [type(e) for e in events] == [BillingEvent, ImpressionEvent]  # the copy: not again
    assert all(e.txid == txid for e in events)


async def test_counters_land_where_the_bidder_reads_them(memcached: tuple[str, int]) -> None:
    second = MemcachedProcess(free_port())
    second.start()
    try:
        servers = [memcached, second.address]
        writer = FrequencyWriter(hash_client(servers, 2), TrackerMetrics(CollectorRegistry()))
        users = [f"u{i}" for i in range(60)]
        for user in users:
            writer.increment(user, [(5, 3600)])
            writer.increment(user, [(5, 3600)])
        await writer.drain()
        await writer.close()
        reader = ShardedMemcached(servers, 2)
        try:
            found = await asyncio.to_thread(
                reader.get_many, [counter_key(5, 3600, u) for u in users]
            )
        finally:
            reader.close()
        assert len(found) == 60 and {int(v) for v in found.values()} == {2}
        # and the keys really are spread over both servers
        client = Client(second.address)
        try:
            on_second = client.get_many([counter_key(5, 3600, u) for u in users])
        finally:
            client.close()
        assert 0 < len(on_second) < 60
    finally:
        second.stop()


async def test_spend_in_sql_equals_the_pure_conversion(pg_dsn: str) -> None:
    await seed(pg_dsn)
    rng = random.Random(11)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO fx_rates (currency, per_usd_micros) VALUES ('XTS', $1)",
            rng.randrange(1, 10**12),
        )
        fx = {
            r["currency"]: r["per_usd_micros"] for r in await conn.fetch("SELECT * FROM fx_rates")
        }
    finally:
        await conn.close()
    expected = 0
    async with tracker_world(pg_dsn) as w:
        for i in range(200):
            currency = rng.choice(sorted(fx))
            price = rng.randrange(0, 10**10)
            query = notice_query(
                "bill", f"m{i}:1:b0", campaign=2, creative=20, currency=currency,
                bid=price, price=f"{price // 10**6}.{price % 10**6:06d}",
            )  # fmt: skip
            assert (await w.get("/bill", query)).status == 204
            expected += campaign_cost(price, fx[currency], fx["EUR"])
    conn = await asyncpg.connect(pg_dsn)
    try:
        total = await conn.fetchval("SELECT sum(spent_micros) FROM campaign_spend")
        per_creative = await conn.fetchval("SELECT sum(spent_micros) FROM tracker_creative_spend")
    finally:
        await conn.close()
    assert total == per_creative == expected


def _remaining_ttl(address: tuple[str, int], key: str) -> int:
    """The seconds memcached will keep ``key`` (meta get with the t flag)."""
    import socket

    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(f"mg {key} t\r\n".encode())
        line = sock.recv(1024).decode()
    assert line.startswith("HD "), line
    return int(line.split()[1][1:])


async def test_counter_expiry_follows_the_fleet_clock_scale(memcached: tuple[str, int]) -> None:
    """A day-long cap in a fleet whose clock runs 3600 times the wall's: the counter lives 24
    real seconds, not a day; at scale 1 it lives the whole period."""
    fast = FrequencyWriter(
        hash_client([memcached], 1), TrackerMetrics(CollectorRegistry()), time_scale=3600.0
    )
    wall = FrequencyWriter(hash_client([memcached], 1), TrackerMetrics(CollectorRegistry()))
    fast.increment("u-fast", [(7, 86400)])
    wall.increment("u-wall", [(7, 3600)])
    await fast.drain()
    await wall.drain()
    await fast.close()
    await wall.close()
    assert 22 <= _remaining_ttl(memcached, counter_key(7, 86400, "u-fast")) <= 24
    assert 3590 <= _remaining_ttl(memcached, counter_key(7, 3600, "u-wall")) <= 3600
