"""Leadership by a session-level Postgres advisory lock: one active instance of a service (the
cache watcher, the pacer) leads while the others wait on the same lock, and the lock passes on
when the leader's session ends (a crash, a network partition, a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg

PG_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

# lead(conn, stop, lost): runs while this session holds the lock; returns when ``stop`` or
# ``lost`` (the session ended) is set, or raises one of PG_ERRORS.
Lead = Callable[[asyncpg.Connection, asyncio.Event, asyncio.Event], Awaitable[None]]


async def lead_while_locked(
    dsn: str,
    lock_key: int,
    *,
    application_name: str,
    retry: float,
    stop: asyncio.Event,
    lead: Lead,
    on_error: Callable[[str, BaseException], None],
) -> None:
    """One Postgres session: try the advisory lock every ``retry`` seconds until it is held,
    then ``lead`` until ``stop`` is set or the session is lost. The connection is closed in
    every case. ``on_error("cannot reach Postgres" | "lost Postgres", exc)`` reports a
    connection that failed; the caller decides how soon to open the next session."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, timeout=5, server_settings={"application_name": application_name}
        )
    except PG_ERRORS as exc:
        on_error("cannot reach Postgres", exc)
        return
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _c: lost.set())
    try:
        while not stop.is_set() and not lost.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry)
        else:
            return
        await lead(conn, stop, lost)
    except PG_ERRORS as exc:
        on_error("lost Postgres", exc)
    finally:
        if not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except PG_ERRORS:
                conn.terminate()
