"""Atomic checkpoints of the online learner, and resuming from one to the same state.

A checkpoint is one ``.npz`` file (numpy's zip of arrays, read back without pickle): every
estimator's (z, n) array, the progressive-validation blocks, and one ``meta`` entry of JSON
holding the rest (scales and counts, the chosen estimators, what the join is waiting for, the
buffered examples, the market evidence, the inverse hash map). It is written to a temporary
file in the same directory, flushed and fsynced, renamed over the old checkpoint, and the
directory is fsynced: a crash leaves either the old checkpoint or the new one, never a torn
file. Loading checks that the checkpoint was made with the same estimator grid.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from learner.errors import BadParameters, CheckpointError
from learner.ftrl import FtrlState
from learner.join import HEADS
from learner.online import LearnerConfig, OnlineLearner, _Pending

CHECKPOINT_FORMAT: Final = 1


def _describe(config: LearnerConfig) -> dict[str, Any]:
    return {
        h: [_params(p) for p in grid]
        for h, grid in (("click", config.click_grid), ("install", config.install_grid))
    }


def _params(p: Any) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("alpha", "beta", "l1", "l2", "bits", "half_life", "loss")}


class _Rows:
    """Feature lists as rows of string ids: each distinct string is written once, and a list
    shared by several waiting things (a bid and its impression's example) once too."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {}
        self.rows: list[list[int]] = []
        self._by_list: dict[int, int] = {}
        self._alive: list[list[str]] = []  # keeps ids of the lists valid while snapshotting

    def row(self, features: list[str]) -> int:
        key = id(features)
        found = self._by_list.get(key)
        if found is not None:
            return found
        strings = self.strings
        self.rows.append([strings.setdefault(f, len(strings)) for f in features])
        self._alive.append(features)
        self._by_list[key] = len(self.rows) - 1
        return len(self.rows) - 1


def snapshot(learner: OnlineLearner) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """(meta, arrays) of the learner's whole state."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    rows = _Rows()
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "grids": _describe(learner.config),
        "seed": learner.config.seed,
        "heads": {},
        "join": learner.joiner.to_state(rows.row),
        "market": learner.market.to_state(),
        "inverse": [list(learner.inverse.names), list(learner.inverse.names.values())],
        "inverse_tick": learner.inverse_tick,
        "market_decayed_at": learner.market_decayed_at,
        "label_delays": learner.label_delays,
    }
    for h in HEADS:
        grid = learner.grids[h]
        states = [e.get_state() for e in grid.estimators]
        for k, s in enumerate(states):
            arrays[f"{h}.{k}.state"] = s.state
        v = grid.validation
        arrays[f"{h}.blocks"] = v.blocks
        arrays[f"{h}.current"] = v.current
        arrays[f"{h}.total"] = v.total
        pending = learner.pending[h]
        meta["heads"][h] = {
            "scales": [s.scale for s in states],
            "examples": [s.examples for s in states],
            "chosen": grid.chosen,
            "switches": grid.switches,
            "learnt": learner.learnt[h],
            "validation": [v.filled, v.head, v.in_current, v.examples],
            "pending": [[rows.row(f) for f in pending.features], pending.labels, pending.weights],
        }
    meta["strings"] = list(rows.strings)
    meta["rows"] = rows.rows
    return meta, arrays


def checkpoint_bytes(learner: OnlineLearner, *, compress: bool = False) -> bytes:
    """The checkpoint as bytes (``compress``: deflated, for a copy sent over the network)."""
    meta, arrays = snapshot(learner)
    buffer = io.BytesIO()
    payload = dict(arrays)
    payload["meta"] = np.frombuffer(msgspec.json.encode(meta), dtype=np.uint8)
    if compress:
        np.savez_compressed(buffer, **payload)  # type: ignore[arg-type]
    else:
        np.savez(buffer, **payload)  # type: ignore[arg-type]
    return buffer.getvalue()


def save_checkpoint(learner: OnlineLearner, path: Path) -> int:
    """Write the checkpoint atomically; returns its size in bytes."""
    data = checkpoint_bytes(learner)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
    return len(data)


def load_checkpoint(path: Path, config: LearnerConfig) -> OnlineLearner:
    """A learner in exactly the state that was saved; CheckpointError when the file is not an
    intact checkpoint of this grid."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return checkpoint_from_bytes(raw, config, str(path))


def checkpoint_from_bytes(raw: bytes, config: LearnerConfig, name: str) -> OnlineLearner:
    """``load_checkpoint`` of bytes (``name`` says where they came from, in errors)."""
    path = name
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    try:
        meta = msgspec.json.decode(arrays.pop("meta").tobytes())
        return _restore(meta, arrays, config)
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        msgspec.DecodeError,
        BadParameters,
    ) as exc:
        raise CheckpointError(f"checkpoint {path} is malformed: {exc!r}") from exc


def _restore(
    meta: dict[str, Any], arrays: dict[str, np.ndarray[Any, Any]], config: LearnerConfig
) -> OnlineLearner:
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r} is not supported")
    if meta["grids"] != _describe(config) or meta["seed"] != config.seed:
        raise CheckpointError("the checkpoint was made with another estimator grid or seed")
    learner = OnlineLearner(config)
    strings: list[str] = meta["strings"]
    built: dict[int, list[str]] = {}

    def features(row: int) -> list[str]:
        found = built.get(row)
        if found is None:
            found = built[row] = [strings[i] for i in meta["rows"][row]]
        return found

    for h in HEADS:
        grid = learner.grids[h]
        m = meta["heads"][h]
        for k, est in enumerate(grid.estimators):
            est.set_state(
                FtrlState(
                    est.params,
                    arrays[f"{h}.{k}.state"],
                    float(m["scales"][k]),
                    int(m["examples"][k]),
                )
            )
        v = grid.validation
        for name in ("blocks", "current", "total"):
            value = arrays[f"{h}.{name}"]
            if value.shape != getattr(v, name).shape:
                raise CheckpointError(f"checkpoint {h}.{name} has another shape")
            setattr(v, name, value.astype(np.float64))
        v.filled, v.head, v.in_current, v.examples = (int(x) for x in m["validation"])
        grid.chosen, grid.switches = int(m["chosen"]), int(m["switches"])
        if not 0 <= grid.chosen < len(grid.estimators):
            raise CheckpointError("checkpoint chose an estimator the grid does not have")
        learner.learnt[h] = int(m["learnt"])
        pending, labels, weights = m["pending"]
        learner.pending[h] = _Pending([features(r) for r in pending], labels, weights)
    learner.joiner.restore(meta["join"], features)
    learner.market.restore(meta["market"])
    names, hashes = meta["inverse"]
    learner.inverse.names = dict(zip(names, hashes, strict=True))
    learner.inverse_tick = int(meta["inverse_tick"])
    decayed = meta["market_decayed_at"]
    learner.market_decayed_at = None if decayed is None else float(decayed)
    learner.label_delays = [float(d) for d in meta["label_delays"]]
    return learner
