"""Fixtures that start real services on free loopback ports: Postgres, memcached, ZMQ endpoints.

Nothing here is mocked. Postgres comes from the binaries on PATH (else the pgserver package);
memcached must be installed — a missing memcached fails the run rather than skipping tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fleet.db import migrate
from fleet.pg import LocalPostgres, free_port
from fleet.processes import MemcachedProcess

__all__ = ["free_port"]


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from a sync fixture, whatever loop the test uses."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """One Postgres server for the session, in a directory the service user can reach."""
    directory = Path(tempfile.mkdtemp(prefix="rtbfleet-test-pg-"))
    directory.chmod(0o755)
    server = LocalPostgres(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(directory, ignore_errors=True)


def _database_dsn(admin_dsn: str, name: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_dsn(pg_server: LocalPostgres) -> Iterator[str]:
    """A fresh, migrated database of its own for each test."""
    name = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_server.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate(_database_dsn(pg_server.dsn, name))

    async def drop() -> None:
        conn = await asyncpg.connect(pg_server.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run_sync(create())
    try:
        yield _database_dsn(pg_server.dsn, name)
    finally:
        if pg_server.is_running():
            run_sync(drop())


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedProcess]:
    if not MemcachedProcess.available():
        pytest.fail(
            "memcached is not installed; the suite needs a real one (apt-get install memcached)"
        )
    server = MemcachedProcess(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memcached(memcached_server: MemcachedProcess) -> tuple[str, int]:
    """(host, port) of the session's memcached, started if a test stopped it, and emptied."""
    from pymemcache.client.base import Client

    memcached_server.start()
    client = Client(memcached_server.address, connect_timeout=2, timeout=2)
    try:
        client.flush_all(noreply=False)  # done before the test writes, not racing its writes
    finally:
        client.close()
    return memcached_server.address


@pytest.fixture
def fleet_variables() -> Iterator[dict[str, str]]:
    """RTBFLEET_* variables for a whole local fleet on free loopback ports, with a data
    directory of its own (outside pytest's private temp tree: the embedded Postgres runs as its
    own user and must reach it), removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="rtbfleet-fleet-"))
    data_dir.chmod(0o755)
    ports = [free_port() for _ in range(8)]
    try:
        yield {
            "RTBFLEET_DATA_DIR": str(data_dir),
            "RTBFLEET_MEMCACHED": f"127.0.0.1:{ports[0]}",
            "RTBFLEET_EVENT_BUS_IN": f"tcp://127.0.0.1:{ports[1]}",
            "RTBFLEET_EVENT_BUS_OUT": f"tcp://127.0.0.1:{ports[2]}",
            "RTBFLEET_COHERENCE_BUS_IN": f"tcp://127.0.0.1:{ports[3]}",
            "RTBFLEET_COHERENCE_BUS_OUT": f"tcp://127.0.0.1:{ports[4]}",
            "RTBFLEET_BIDDER_PORT": str(ports[5]),
            "RTBFLEET_TRACKER_PORT": str(ports[6]),
            "RTBFLEET_BIDLOGGER_PORT": str(ports[7]),
        }
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def zmq_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture(autouse=True)
def _no_settings_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read a developer's RTBFLEET_* variables by accident."""
    for key in list(os.environ):
        if key.startswith("RTBFLEET_"):
            monkeypatch.delenv(key)
