"""Raw-sample events as hourly Parquet files: segments on disk, then files in the outbox.

Each flush appends its raw-sample events (the JSON lines of its chunks, ``bidlogger.raw``, as
they are: a chunk within one hour is one write, whole) to one open segment per (event type, hour
of the event's own timestamp). A segment is closed into a Parquet file when it holds
``max_rows``, when it has been open ``max_seconds``, or when the events' time has passed the end
of its hour by ``hour_grace`` seconds. The file goes to the outbox under its object key::

    events/type=<type>/date=YYYY-MM-DD/hour=HH/<logger>-<seq>.parquet

and the uploader moves it to the object store. Columns are the event's own fields, typed from
its msgspec definition in fleet.events; one file holds one event type.

The file is built as the segment fills: each append's lines are parsed by Arrow's JSON reader
at once (the flush runs it in a worker thread, and Arrow releases the GIL), and every
``ROW_GROUP_ROWS`` rows go out as a row group of a file under construction beside the segment
(``.part``); closing writes the rest and the footer and moves the file to the outbox, so a
closing segment costs little more than its last rows, not a parse of the whole segment. The
segment's JSON lines stay the record on disk: a segment left by a crash (its ``.part`` is
incomplete and removed) is converted whole at start, in one call to Arrow's JSON reader, as is
one whose lines Arrow could not parse as they came (and which then fails as it did).
"""

from __future__ import annotations

import contextlib
import os
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from bidlogger.aggregate import CLASSES, HOUR
from bidlogger.errors import SpoolError
from bidlogger.raw import RawChunk, split_lines
from bidlogger.spool import write_atomically

SEGMENT_SUFFIX = ".seg"
PART_SUFFIX = ".part"  # the Parquet file of an open segment, being written
ROW_GROUP_ROWS = 65_536  # rows buffered per open segment before they go out as a row group
COMPRESSION = "zstd"
MAX_BLOCK = 1 << 30  # Arrow's JSON block size is an int32; a segment this large is rare


def arrow_type(annotation: Any) -> pa.DataType:
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    if annotation is str:
        return pa.string()
    if annotation is bool:
        return pa.bool_()
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and len(args) == 1:
        return pa.list_(arrow_type(args[0]))
    if args and type(None) in args:  # X | None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return arrow_type(rest[0])
    raise TypeError(f"no Parquet type for {annotation!r}")


def schema_of(event_type: str) -> pa.Schema:
    cls = CLASSES[event_type]
    hints = typing.get_type_hints(cls)
    return pa.schema(
        [pa.field(f.name, arrow_type(hints[f.name])) for f in msgspec.structs.fields(cls)]
    )


SCHEMAS: dict[str, pa.Schema] = {name: schema_of(name) for name in CLASSES}


def table_of(event_type: str, lines: bytes) -> pa.Table:
    """The Parquet table of one type's events, from their JSON lines (Arrow's own parser), in
    one block on this thread (Arrow's thread pool costs more than it gains on a busy host)."""
    options = pa_json.ParseOptions(
        explicit_schema=SCHEMAS[event_type], unexpected_field_behavior="ignore"
    )
    reading = pa_json.ReadOptions(use_threads=False, block_size=min(len(lines) + 1, MAX_BLOCK))
    return pa_json.read_json(pa.BufferReader(lines), read_options=reading, parse_options=options)


def object_key(event_type: str, hour_start: int, logger_id: str, seq: int) -> str:
    when = datetime.fromtimestamp(hour_start, UTC)
    return (
        f"events/type={event_type}/date={when:%Y-%m-%d}/hour={when:%H}/"
        f"{logger_id}-{seq:012d}.parquet"
    )


def read_segment(path: Path) -> bytes:
    """The whole lines of a segment (a torn last line, from a crash mid-append, is dropped)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


@dataclass
class _Open:
    path: Path
    event_type: str
    hour: int
    seq: int
    rows: int
    opened: float  # monotonic
    built: _Building | None = None  # its Parquet file so far; None: converted whole at close


class _Building:
    """The Parquet file of an open segment, written row group by row group beside it."""

    def __init__(self, path: Path, event_type: str) -> None:
        self.path = path
        self.event_type = event_type
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0  # in the file and pending
        self._writer: pq.ParquetWriter | None = None

    def add(self, lines: bytes) -> None:
        table = table_of(self.event_type, lines)
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._write()

    def _write(self) -> None:
        if not self.pending:
            return
        if self._writer is None:
            schema = SCHEMAS[self.event_type]
            self._writer = pq.ParquetWriter(self.path, schema, compression=COMPRESSION)
        table = pa.concat_tables(self.pending)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.pending, self.pending_rows = [], 0

    def finish(self) -> None:
        """The rest as the last row group, then the footer."""
        self._write()
        if self._writer is None:  # nothing at all: an empty file of the schema
            self._writer = pq.ParquetWriter(
                self.path, SCHEMAS[self.event_type], compression=COMPRESSION
            )
        self._writer.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            if self._writer is not None:
                self._writer.close()
        self._writer = None
        self.pending = []
        with contextlib.suppress(OSError):
            self.path.unlink()


class Segments:
    """Open segments and their conversion to Parquet files in ``outbox``."""

    def __init__(
        self,
        directory: Path,
        outbox: Path,
        *,
        logger_id: str,
        max_rows: int,
        max_seconds: float,
        hour_grace: float = 120.0,
    ) -> None:
        self.directory = directory
        self.outbox = outbox
        self.logger_id = logger_id
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.hour_grace = hour_grace
        self._open: dict[tuple[str, int], _Open] = {}
        self.files_written = 0
        self.rows_written = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
            outbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create {directory} or {outbox}: {exc}") from exc
        self._counter = directory / "next_seq"
        self._next_seq = self._read_counter()

    def _read_counter(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self._counter.read_text().strip())
        return 1

    def _allocate(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        write_atomically(self._counter, str(self._next_seq).encode())
        return seq

    @property
    def open_rows(self) -> int:
        return sum(s.rows for s in self._open.values())

    def recover(self) -> list[Path]:
        """Close the segments a previous run left behind; returns the Parquet files made."""
        for part in self.directory.glob(f"*{PART_SUFFIX}"):  # incomplete: made again whole
            with contextlib.suppress(OSError):
                part.unlink()
        made = []
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            event_type, hour, seq = self._parse(path)
            if event_type is None:
                continue
            made.append(self._convert(_Open(path, event_type, hour, seq, 0, 0.0)))
        return [m for m in made if m is not None]

    @staticmethod
    def _parse(path: Path) -> tuple[str | None, int, int]:
        parts = path.stem.split(".")
        if len(parts) != 3 or parts[0] not in CLASSES:
            return None, 0, 0
        try:
            return parts[0], int(parts[1]), int(parts[2])
        except ValueError:
            return None, 0, 0

    def append(self, chunks: list[RawChunk], now: float) -> None:
        """Append one flush's raw chunks to their segments (``now``: a monotonic clock)."""
        groups: dict[tuple[str, int], list[bytes]] = {}
        for c in chunks:
            if not c.stamps:
                continue
            hour = int(min(c.stamps)) // HOUR * HOUR
            if int(max(c.stamps)) // HOUR * HOUR == hour:  # nearly always: the lines whole
                groups.setdefault((c.event_type, hour), []).append(c.lines)
                continue
            for ts, line in zip(c.stamps, split_lines(c.lines), strict=True):
                groups.setdefault((c.event_type, int(ts) // HOUR * HOUR), []).append(line + b"\n")
        try:
            for key, payloads in groups.items():
                seg = self._open.get(key)
                if seg is None:
                    seq = self._allocate()
                    path = self.directory / f"{key[0]}.{key[1]}.{seq}{SEGMENT_SUFFIX}"
                    built = _Building(path.with_suffix(PART_SUFFIX), key[0])
                    seg = self._open[key] = _Open(path, key[0], key[1], seq, 0, now, built)
                data = b"".join(payloads)
                with open(seg.path, "ab") as f:
                    f.write(data)
                seg.rows += data.count(b"\n")
                self._build(seg, data)
        except OSError as exc:
            raise SpoolError(f"cannot append to a raw segment: {exc}") from exc

    @staticmethod
    def _build(seg: _Open, data: bytes) -> None:
        """``data`` (whole lines, just appended) into the segment's Parquet file so far; on
        failure the file is dropped and the segment converted whole at close instead."""
        built = seg.built
        if built is None:
            return
        try:
            built.add(data)
        except (OSError, pa.ArrowException):
            built.discard()
            seg.built = None

    def close_due(self, now: float, watermark: float, *, everything: bool = False) -> list[Path]:
        """Close segments that are full, old, or whose hour has passed; or all of them."""
        made = []
        for key, seg in list(self._open.items()):
            if (
                everything
                or seg.rows >= self.max_rows
                or now - seg.opened >= self.max_seconds
                or watermark >= seg.hour + HOUR + self.hour_grace
            ):
                del self._open[key]
                path = self._convert(seg)
                if path is not None:
                    made.append(path)
        return made

    def _convert(self, seg: _Open) -> Path | None:
        built, seg.built = seg.built, None
        try:
            if built is not None and built.rows == seg.rows:
                target = self._target(seg) if seg.rows else None
                if target is None:
                    built.discard()
                else:
                    built.finish()
                    os.replace(built.path, target)
                    self.files_written += 1
                    self.rows_written += built.rows
                seg.path.unlink()
                return target
            if built is not None:  # not every line made it in: the segment's lines decide
                built.discard()
            lines = read_segment(seg.path)
            target = None
            if lines:
                table = table_of(seg.event_type, lines)
                target = self._target(seg)
                tmp = target.with_name(target.name + ".tmp")
                pq.write_table(table, tmp, compression=COMPRESSION)
                os.replace(tmp, target)
                self.files_written += 1
                self.rows_written += table.num_rows
            seg.path.unlink()
        except (OSError, pa.ArrowException) as exc:
            raise SpoolError(f"cannot write the Parquet file of {seg.path.name}: {exc}") from exc
        return target

    def _target(self, seg: _Open) -> Path:
        target = self.outbox / object_key(seg.event_type, seg.hour, self.logger_id, seg.seq)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def outbox_files(outbox: Path) -> list[Path]:
    """Parquet files waiting for upload, oldest first."""
    files = [p for p in outbox.rglob("*.parquet") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))
