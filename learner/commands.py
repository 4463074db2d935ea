"""``rtbfleet model show``: the newest stored model, its market table and its heaviest features.

The model holds weights by hash index only; names come from the learner's checkpoint (its
bounded inverse hash map, ``learner.inverse``), looked up in the stored model's click head.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path
from typing import TextIO

import asyncpg
import numpy as np

from fleet.db.model_store import StoredModel, load_model
from fleet.errors import FleetError
from fleet.features import hash_features
from fleet.model import ModelFormatError, SparseModel, decode_sparse
from fleet.settings import FleetSettings
from learner.checkpoint import load_checkpoint
from learner.errors import LearnerError
from learner.settings import LearnerSettings


def show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, default=None, help="this model (default: the newest)")
    p.add_argument("--top", type=int, default=20, help="heaviest features to print")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="learner checkpoint with the feature names (default: RTBFLEET_LEARNER_CHECKPOINT)",
    )


def heaviest(model: SparseModel, names: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` named features with the largest click weights in ``model``, heaviest first."""
    if not names or k <= 0:
        return []
    dense = model.click.dense(model.bits)
    idx = hash_features(names, model.bits, model.seed)
    w = dense[idx].astype(np.float64)
    order = np.argsort(-np.abs(w), kind="stable")[:k]
    return [(names[i], float(w[i])) for i in order.tolist() if w[i] != 0]


def describe(stored: StoredModel, model: SparseModel, names: list[str], top: int) -> list[str]:
    m = model.market
    lines = [
        f"model {model.version}: feature set {model.feature_set} v{model.feature_set_version}, "
        f"{model.bits} bits, seed {model.seed}, estimator {stored.estimator or '-'}",
        f"weights: click {len(model.click):,} non-zero (bias {model.click.bias:+.3f}), "
        f"install {len(model.install):,} (bias {model.install.bias:+.3f}), "
        f"{len(stored.body):,} bytes",
        f"market: {len(m.segments)} segments, overall median "
        f"{math.exp(m.overall.mu) / 1e6:.3f} CPM, sigma {m.overall.sigma:.3f}",
    ]
    heavy = heaviest(model, names, top)
    if heavy:
        lines.append("heaviest click features:")
        lines.extend(f"  {w:+.4f}  {n}" for n, w in heavy)
    elif not names:
        lines.append("heaviest click features: no names (no learner checkpoint readable here)")
    return lines


async def _fetch(dsn: str, version: int | None) -> StoredModel | None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await load_model(conn, version)
    finally:
        await conn.close()


def _names(path: Path) -> list[str]:
    try:
        settings = LearnerSettings.from_env()
        learner = load_checkpoint(path, settings.to_config())
    except (LearnerError, FleetError):
        return []
    return list(learner.inverse.names)


def model_show(settings: FleetSettings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``rtbfleet model show`` (fleet.registry)."""
    out = out or sys.stdout
    from fleet.launcher import configured_dsn

    try:
        dsn = configured_dsn(settings)
    except FleetError as exc:
        print(f"model show: {exc}")
        return 1
    try:
        stored = asyncio.run(_fetch(dsn, args.version))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"model show: cannot read the models table: {exc}", file=sys.stderr)
        return 1
    if stored is None:
        which = "no model is stored" if args.version is None else f"no model {args.version}"
        print(f"model show: {which}", file=sys.stderr)
        return 1
    try:
        model = decode_sparse(stored.body)
    except ModelFormatError as exc:
        print(f"model show: model {stored.version} is unreadable: {exc}", file=sys.stderr)
        return 1
    path = args.checkpoint or LearnerSettings.from_env().checkpoint_file
    for line in describe(stored, model, _names(Path(path)), args.top):
        print(line, file=out)
    return 0
