"""Versioned SQL migrations, applied in order under an advisory lock and recorded.

Files are ``migrations/NNNN_name.sql``. Each is applied in its own transaction together with its
row in ``schema_migrations`` (version, name, checksum), so a crash leaves either all or none of a
migration. A migration whose file changed after it was applied is refused (checksum mismatch):
migrations are append-only. Running ``migrate`` again is a no-op.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from fleet.errors import DatabaseError

log = logging.getLogger("fleet.db")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# An arbitrary constant: every process that migrates takes the same session-level lock.
MIGRATION_LOCK_KEY = 0x72746266_6D696772  # "rtbfmigr"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        head, _, rest = path.stem.partition("_")
        if not head.isdigit():
            raise DatabaseError(f"migration file {path.name} does not start with a number")
        migrations.append(Migration(int(head), rest, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migration files share a version number")
    return migrations


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {int(r["version"]): str(r["checksum"]) for r in rows}


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply what is missing; returns the versions applied now (empty when up to date)."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to Postgres: {exc}") from exc
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = await applied_versions(conn)
            applied: list[int] = []
            for m in available_migrations(directory):
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise DatabaseError(
                            f"migration {m.version:04d}_{m.name} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
                log.info("applied migration %04d_%s", m.version, m.name)
                applied.append(m.version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    except asyncpg.PostgresError as exc:
        raise DatabaseError(f"migration failed: {exc}") from exc
    finally:
        await conn.close()
