"""Offline training from event files: ``python -m learner.train FILES``.

Each file holds events of the bus schema (``fleet.events``), in time order:

- JSON lines (``.jsonl``, ``.ndjson``, ``.json``, optionally ``.gz``): one event object per
  line with its ``type`` tag (``{"type": "bid", "txid": ..., "features": [...], ...}``);
- Parquet (``.parquet``): one event per row, a ``type`` column and the events' fields as
  columns (null where a field does not belong to the row's type).

The events run through the same join and grid as the live learner; the chosen estimators and
the market model are written as a sparse (version 2) model file. With ``--checkpoint`` the
learner resumes from that file when it exists and saves to it at the end (and before stopping
on a bad record, so nothing learnt is lost); examples still waiting for a label then keep
waiting in the checkpoint for the next files (``--final`` settles them), so training file by
file gives the same model as one run over all of them. A bad record stops the run with one
line naming the file and line (or row) and why; exit status 2.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np

from fleet.errors import FleetError
from fleet.events import AnyEvent
from fleet.model import encode_sparse
from fleet.settings import FleetSettings
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.errors import BadRecord, LearnerError
from learner.online import LearnerConfig, OnlineLearner
from learner.settings import LearnerSettings

_json = msgspec.json.Decoder(AnyEvent)
_ROW_GROUP_EVENTS = 65_536


class Progress:
    """A one-line progress bar on a terminal (a line every few seconds elsewhere)."""

    def __init__(self, total_bytes: int, out: TextIO, clock: Any = time.monotonic) -> None:
        self.total = max(total_bytes, 1)
        self.out = out
        self.clock = clock
        self.started = self.last = clock()
        self.tty = out.isatty()
        self.every = 0.2 if self.tty else 5.0

    def update(self, done_bytes: int, events: int, examples: int, name: str) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        self.out.write(self.line(done_bytes, events, examples, name, now))
        self.out.flush()

    def line(self, done_bytes: int, events: int, examples: int, name: str, now: float) -> str:
        share = min(done_bytes / self.total, 1.0)
        bar = "#" * int(share * 30)
        rate = examples / max(now - self.started, 1e-9)
        text = (
            f"[{bar:<30}] {share:6.1%} {events:,} events {examples:,} examples "
            f"{rate:,.0f} ex/s {name}"
        )
        return ("\r" + text[:150] + "\x1b[K") if self.tty else text + "\n"

    def finish(self, events: int, examples: int) -> None:
        now = self.clock()
        self.out.write(self.line(self.total, events, examples, "done", now))
        if self.tty:
            self.out.write("\n")
        self.out.flush()


def _open_text(path: Path) -> tuple[io.BufferedReader, io.BufferedIOBase]:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
    return raw, stream


def read_jsonl(path: Path) -> Iterator[tuple[AnyEvent, int]]:
    """(event, bytes of the file read so far)."""
    raw, stream = _open_text(path)
    with raw, stream:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                event = _json.decode(line)
            except msgspec.DecodeError as exc:
                raise BadRecord(f"{path}:{lineno}", str(exc)) from None
            yield event, raw.tell()


def read_parquet(path: Path) -> Iterator[tuple[AnyEvent, int]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError...
        raise BadRecord(str(path), f"not a Parquet file: {exc}") from None
    if "type" not in pf.schema_arrow.names:
        raise BadRecord(str(path), "no 'type' column (one event per row)")
    size = max(path.stat().st_size, 1)
    groups = max(pf.num_row_groups, 1)
    row = 0
    for g in range(pf.num_row_groups):
        for batch in pf.iter_batches(batch_size=_ROW_GROUP_EVENTS, row_groups=[g]):
            for record in batch.to_pylist():
                row += 1
                fields = {k: v for k, v in record.items() if v is not None}
                try:
                    event = msgspec.convert(fields, AnyEvent)
                except msgspec.ValidationError as exc:
                    raise BadRecord(f"{path}: row {row}", str(exc)) from None
                yield event, size * (g + 1) // groups


def read_events(path: Path) -> Iterator[tuple[AnyEvent, int]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return read_parquet(path)
    if name.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")):
        return read_jsonl(path)
    raise BadRecord(str(path), "unknown file type (want .jsonl[.gz], .ndjson, .json, .parquet)")


def train_files(
    learner: OnlineLearner,
    paths: Sequence[Path],
    progress: Progress | None = None,
    *,
    drain: bool = True,
) -> int:
    """Feed every event of ``paths`` to the learner, in order; returns the number of events.
    At the end the buffered examples are learnt, and with ``drain`` the join is settled too
    (every waiting example becomes a negative): the end of the data. Without it they keep
    waiting for the labels of the next files (a checkpoint keeps them)."""
    events = 0
    done_before = 0
    for path in paths:
        last = 0
        for event, done in read_events(path):
            learner.feed(event)
            events += 1
            last = done
            if progress is not None and events % 1024 == 0:
                learnt = sum(learner.learnt.values())
                progress.update(done_before + done, events, learnt, path.name)
        done_before += max(last, path.stat().st_size)
    if drain:
        learner.drain()
    else:
        learner.train()
    return events


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def summary(learner: OnlineLearner, rng: np.random.Generator) -> list[str]:
    lines = []
    stats = learner.joiner.stats
    for head, sel in learner.select(rng).items():
        lines.append(
            f"{head}: {learner.learnt[head]:,} examples, {stats.positives[head]:,} positive"
        )
        for r in sel.reports:
            mark = "*" if r.index == sel.chosen else " "
            lines.append(
                f" {mark} {r.index}: {r.params.describe():<52} log loss {r.log_loss}  "
                f"NE {r.normalised_entropy.value:.4f}  calibration {r.calibration.value:.3f}"
            )
    lines.append(
        f"join: {stats.unjoined:,} unjoined, {stats.late_labels:,} late labels, "
        f"{stats.duplicates:,} duplicates, {stats.evicted:,} settled early"
    )
    table = learner.market.fit()
    lines.append(
        f"market: {len(table.segments)} segments, overall median "
        f"{np.exp(table.overall.mu) / 1e6:.3f} CPM, sigma {table.overall.sigma:.3f}"
    )
    heavy = learner.heaviest(10)
    if heavy:
        lines.append("heaviest click features: " + ", ".join(f"{n} {w:+.3f}" for n, w in heavy))
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m learner.train", description="train the learner offline from event files"
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``rtbfleet learner train`` (and ``python -m learner.train``)."""
    p.add_argument("files", nargs="+", type=Path, help="JSON lines or Parquet event files")
    p.add_argument("--out", type=Path, default=Path("model.rtbm"), help="model file to write")
    p.add_argument("--version", type=int, default=None, help="model version (default: now, ms)")
    p.add_argument("--checkpoint", type=Path, default=None, help="resume from and save to")
    p.add_argument(
        "--final",
        action="store_true",
        help="with --checkpoint: these are the last files, settle every waiting example",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """The report goes to ``out`` (stdout), progress and errors to ``err`` (stderr)."""
    return run(build_parser().parse_args(argv), out, err)


def command(settings: FleetSettings, args: argparse.Namespace) -> int:
    """``rtbfleet learner train FILES`` (fleet.registry)."""
    return run(args)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    err = sys.stderr if err is None else err
    try:
        config: LearnerConfig = LearnerSettings.from_env().to_config()
    except FleetError as exc:
        print(f"train: {exc}", file=err)
        return 2
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"train: no such file: {', '.join(missing)}", file=err)
        return 2
    try:
        if args.checkpoint is not None and args.checkpoint.exists():
            learner = load_checkpoint(args.checkpoint, config)
        else:
            learner = OnlineLearner(config)
    except LearnerError as exc:
        print(f"train: {exc}", file=err)
        return 2
    total = sum(f.stat().st_size for f in args.files)
    progress = None if args.quiet else Progress(total, err)
    status = 0
    try:
        drain = args.checkpoint is None or args.final
        events = train_files(learner, args.files, progress, drain=drain)
    except BadRecord as exc:
        print(("\n" if progress is not None and progress.tty else "") + f"train: {exc}", file=err)
        learner.train()  # what was read before the bad record is kept
        events, status = -1, 2
    if progress is not None and events >= 0:
        progress.finish(events, sum(learner.learnt.values()))
    try:
        if args.checkpoint is not None:
            save_checkpoint(learner, args.checkpoint)
        if status == 0:
            version = args.version if args.version is not None else int(time.time() * 1000)
            model = learner.export(version)
            data = encode_sparse(model)
            _write_atomic(args.out, data)
            report = io.StringIO()
            for line in summary(learner, np.random.default_rng(0)):
                print(line, file=report)
            print(
                f"model {args.out}: version {version}, {model.bits} bits, "
                f"{model.nonzero:,} non-zero weights, {len(data):,} bytes",
                file=report,
            )
            print(report.getvalue(), end="", file=out or sys.stdout)
    except (OSError, LearnerError) as exc:
        print(f"train: {exc}", file=err)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
