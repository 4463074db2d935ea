"""The tracker's HTTP route (tracker/app.py) in process, over loopback HTTP against real
Postgres: a notice is answered with a future that its batch's one callback settles, with the
batch's counts recorded once; every notice of a batch Postgres cannot take gets 503; and a
settled batch leaves no reference cycle for the collector (its notices are freed at once)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest_bidder import RawClient
from conftest_tracker import NOW, TcpProxy, World, notice_query, proxied_dsn, seed, tracker_world

from fleet.http import HttpLimits, HttpServer
from tracker.app import make_application, make_server
from tracker.notices import Pending

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def serving(world: World) -> AsyncIterator[int]:
    server: HttpServer = make_server(
        lambda: world.tracker,
        make_application(ready=lambda: True, registry=world.registry),
        HttpLimits(),
        world.registry,
        lambda: NOW,
    )
    await server.listen(0, "127.0.0.1")
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        await server.shutdown(1.0)


async def bills(port: int, queries: list[str]) -> list[int]:
    """Each query on a connection of its own, all sent before any is answered."""
    clients = [RawClient(port) for _ in queries]
    for client, query in zip(clients, queries, strict=True):
        await client.send(f"GET /bill?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    try:
        return [(await client.reply()).status for client in clients]
    finally:
        for client in clients:
            await client.close()


async def test_a_batch_answers_its_notices_from_one_callback_and_counts_once(
    pg_dsn: str,
) -> None:
    await seed(pg_dsn)
    queries = [notice_query("bill", f"route:{i}:b0") for i in range(12)]
    async with tracker_world(pg_dsn, lanes=(0,)) as world, serving(world) as port:
        collected = gc.isenabled()
        gc.disable()
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            statuses = await bills(port, [*queries, queries[0]])  # the last one a copy
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, Pending)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            if collected:
                gc.enable()
        assert statuses == [204] * 13
        assert left == []  # no notice of a settled batch waits for the collector
        assert world.value("tracker_notices_total", kind="bill", outcome="counted") == 12
        assert world.value("tracker_notices_total", kind="bill", outcome="duplicate") == 1
        assert world.value("tracker_duplicates_total", kind="bill") == 1
        assert world.value("tracker_spend_micros_total", currency="USD") == 12 * 2_500
        assert world.value("tracker_batch_notices_count") < 13  # they were grouped
        spent = await world.pool.fetchval("SELECT sum(spent_micros) FROM campaign_spend")
        assert spent == 12 * 2_500


async def test_a_batch_postgres_cannot_take_answers_each_of_its_notices_503(pg_dsn: str) -> None:
    await seed(pg_dsn)
    parts = urlsplit(pg_dsn)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.start()
    try:
        async with (
            tracker_world(proxied_dsn(pg_dsn, proxy.port), timeout=1.0, lanes=(0,)) as world,
            serving(world) as port,
        ):
            assert await bills(port, [notice_query("bill", "down:0:b0")]) == [204]
            proxy.cut()
            down = [notice_query("bill", f"down:{i}:b0") for i in range(1, 4)]
            assert await bills(port, down) == [503] * 3
            assert world.value("tracker_notices_total", kind="bill", outcome="unavailable") == 3
            proxy.restore()
            for _ in range(100):  # the exchange retries until answered
                if await bills(port, down) == [204] * 3:
                    break
                await asyncio.sleep(0.05)
            assert await bills(port, down) == [204] * 3  # now copies: counted once
            assert world.value("tracker_notices_total", kind="bill", outcome="counted") == 4
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await conn.fetchval("SELECT sum(spent_micros) FROM campaign_spend") == 4 * 2_500
        finally:
            await conn.close()
    finally:
        await proxy.close()
