"""The learner's own Postgres rows (migration 0042, ``learner_leader``): where the leading
learner receives the others' joined examples, and its training state for the next leader.

Only the session holding the fleet's learner lock writes (the callers ensure it); every write
of the state names the epoch it belongs to, and a leader whose epoch was replaced cannot
overwrite its successor's row (the ``WHERE epoch = $2`` fence).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Leader:
    epoch: int
    address: str
    leader: str


async def advertise(conn: asyncpg.Connection, lock_key: int, address: str, leader: str) -> int:
    """Begin a leadership: the next epoch, with the address the others send examples to."""
    epoch = await conn.fetchval(
        "INSERT INTO learner_leader (lock_key, epoch, address, leader) VALUES ($1, 1, $2, $3)"
        " ON CONFLICT (lock_key) DO UPDATE SET epoch = learner_leader.epoch + 1,"
        " address = EXCLUDED.address, leader = EXCLUDED.leader, since = now()"
        " RETURNING epoch",
        lock_key,
        address,
        leader,
    )
    return int(epoch)


async def current_leader(conn: asyncpg.Connection, lock_key: int) -> Leader | None:
    row = await conn.fetchrow(
        "SELECT epoch, address, leader FROM learner_leader WHERE lock_key = $1", lock_key
    )
    if row is None:
        return None
    return Leader(int(row["epoch"]), str(row["address"]), str(row["leader"]))


async def save_state(conn: asyncpg.Connection, lock_key: int, epoch: int, state: bytes) -> bool:
    """Store the leader's training state; False when ``epoch`` is no longer the current one."""
    status = await conn.execute(
        "UPDATE learner_leader SET state = $3, state_epoch = $2, state_saved_at = now()"
        " WHERE lock_key = $1 AND epoch = $2",
        lock_key,
        epoch,
        state,
    )
    return bool(status.endswith(" 1"))


async def load_state(conn: asyncpg.Connection, lock_key: int) -> bytes | None:
    """The last leader's training state, None when no leader saved one."""
    state = await conn.fetchval("SELECT state FROM learner_leader WHERE lock_key = $1", lock_key)
    return None if state is None else bytes(state)
