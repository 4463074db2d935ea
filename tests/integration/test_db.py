"""Migrations, the config store and change notifications against a real Postgres."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from fleet.db import available_migrations, migrate
from fleet.db.config_store import load_snapshot
from fleet.errors import ConfigValidationError, DatabaseError
from fleet.portfolio import load_document
from sim.portfolio import generate


async def test_migrate_is_idempotent_and_recorded(pg_dsn: str) -> None:
    assert await migrate(pg_dsn) == []  # the fixture already migrated
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == [m.version for m in available_migrations()]


async def test_concurrent_migrations_apply_each_file_once(pg_server: object, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    results = await asyncio.gather(*(migrate(pg_dsn) for _ in range(4)))
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in available_migrations()]


async def test_changed_migration_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    for m in available_migrations():
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql + "\n-- edited\n")
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        await migrate(pg_dsn, tmp_path)


async def test_load_document_round_trips_through_snapshot(pg_dsn: str) -> None:
    document = generate(20, seed=3)
    result = await load_document(pg_dsn, document)
    assert (result.campaigns, result.creatives) == (20, 100)
    conn = await asyncpg.connect(pg_dsn)
    try:
        snap = await load_snapshot(conn)
    finally:
        await conn.close()
    assert len(snap.campaigns) == 20
    first = snap.campaigns[0]
    assert first.daily_budget_micros > 0 and len(first.creatives) == 5
    assert snap.version >= max(c.version for c in snap.campaigns) > 0
    assert snap.fx_per_usd_micros["EUR"] == 920_000
    # Loading the same document again is an upsert, not a duplicate.
    await load_document(pg_dsn, document)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM campaigns") == 20
    finally:
        await conn.close()


async def test_invalid_document_writes_nothing(pg_dsn: str) -> None:
    document = generate(5, seed=3)
    document["campaigns"][4]["advertiser_id"] = 999  # unknown here and in the database
    with pytest.raises(ConfigValidationError):
        await load_document(pg_dsn, document)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0
        assert await conn.fetchval("SELECT count(*) FROM advertisers") == 0
    finally:
        await conn.close()


async def test_every_config_change_is_notified_with_a_newer_version(pg_dsn: str) -> None:
    await load_document(pg_dsn, generate(2, seed=1))
    listener = await asyncpg.connect(pg_dsn)
    writer = await asyncpg.connect(pg_dsn)
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await listener.add_listener(
        "config_changed", lambda *args: received.put_nowait(json.loads(args[3]))
    )
    try:
        before = await writer.fetchval("SELECT version FROM campaigns WHERE id = 1")
        await writer.execute("UPDATE campaigns SET status = 'paused' WHERE id = 1")
        await writer.execute("UPDATE targeting SET countries = '{USA}' WHERE campaign_id = 2")
        await writer.execute("DELETE FROM creatives WHERE id = 1")
        notes = [await asyncio.wait_for(received.get(), 5) for _ in range(3)]
    finally:
        await listener.close()
        await writer.close()
    assert [(n["table"], n["id"], n["op"]) for n in notes] == [
        ("campaigns", "1", "UPDATE"),
        ("targeting", "2", "UPDATE"),
        ("creatives", "1", "DELETE"),
    ]
    versions = [int(str(n["version"])) for n in notes]
    assert versions[0] > before and versions == sorted(versions)


async def test_database_refuses_bad_money_and_bad_enums(pg_dsn: str) -> None:
    await load_document(pg_dsn, generate(1, seed=1))
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE campaigns SET goal_type = 'CPX' WHERE id = 1")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE campaigns SET daily_budget_micros = -1 WHERE id = 1")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE targeting SET hours_of_week = '{168}' WHERE campaign_id = 1")
    finally:
        await conn.close()
