"""The models table (migration 0040): the learner writes each exported model here, the bidders
and ``rtbfleet model show`` read the newest. Rows are whole model files (``fleet.model``); the
version is the model's own, so a row is written once and never changed."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from fleet.model import SparseModel, encode_sparse


@dataclass(frozen=True, slots=True)
class StoredModel:
    version: int
    feature_set: str
    feature_set_version: int
    estimator: str
    body: bytes


async def save_model(conn: asyncpg.Connection, model: SparseModel, estimator: str = "") -> bool:
    """Store ``model``; False when that version is already stored (a replay after a restart)."""
    body = encode_sparse(model)
    status = await conn.execute(
        "INSERT INTO models (version, feature_set, feature_set_version, estimator, nonzero,"
        " size_bytes, body) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (version) DO NOTHING",
        model.version,
        model.feature_set,
        model.feature_set_version,
        estimator,
        model.nonzero,
        len(body),
        body,
    )
    return bool(status.endswith(" 1"))


async def latest_version(conn: asyncpg.Connection) -> int:
    """The newest stored model's version, 0 when there is none."""
    v = await conn.fetchval("SELECT coalesce(max(version), 0) FROM models")
    return int(v)


async def load_model(conn: asyncpg.Connection, version: int | None = None) -> StoredModel | None:
    """The model of ``version`` (default: the newest); None when there is none."""
    if version is None:
        row = await conn.fetchrow(
            "SELECT version, feature_set, feature_set_version, estimator, body"
            " FROM models ORDER BY version DESC LIMIT 1"
        )
    else:
        row = await conn.fetchrow(
            "SELECT version, feature_set, feature_set_version, estimator, body"
            " FROM models WHERE version = $1",
            version,
        )
    if row is None:
        return None
    return StoredModel(
        int(row["version"]),
        str(row["feature_set"]),
        int(row["feature_set_version"]),
        str(row["estimator"]),
        bytes(row["body"]),
    )
