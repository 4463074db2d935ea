"""Raw-sample events as hourly Parquet files: segments on disk, then files in the outbox.

Each flush appends its raw-sample events (the JSON lines of its chunks, ``bidlogger.raw``, as
they are: a chunk within one hour is one write, whole) to one open segment per (event type, hour
of the event's own timestamp). A segment is closed into a Parquet file when it holds
``max_rows``, when it has been open ``max_seconds``, or when the events' time has passed the end
of its hour by ``hour_grace`` seconds; a segment left by a crash is closed at start. A segment
is converted whole, in one call to Arrow's JSON reader (one block, on the calling thread: the
flush runs it in a worker thread, and Arrow releases the GIL). The file goes to the outbox under
its object key::

    events/type=<type>/date=YYYY-MM-DD/hour=HH/<logger>-<seq>.parquet

and the uploader moves it to the object store. Columns are the event's own fields, typed from
its msgspec definition in fleet.events; one file holds one event type.
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
                    seg = self._open[key] = _Open(path, key[0], key[1], seq, 0, now)
                data = b"".join(payloads)
                with open(seg.path, "ab") as f:
                    f.write(data)
                seg.rows += data.count(b"\n")
        except OSError as exc:
            raise SpoolError(f"cannot append to a raw segment: {exc}") from exc

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
        try:
            lines = read_segment(seg.path)
            if lines:
                table = table_of(seg.event_type, lines)
                key = object_key(seg.event_type, seg.hour, self.logger_id, seg.seq)
                target = self.outbox / key
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                pq.write_table(table, tmp, compression="zstd")
                os.replace(tmp, target)
                self.files_written += 1
                self.rows_written += table.num_rows
            seg.path.unlink()
        except (OSError, pa.ArrowException) as exc:
            raise SpoolError(f"cannot write the Parquet file of {seg.path.name}: {exc}") from exc
        return target if lines else None


def outbox_files(outbox: Path) -> list[Path]:
    """Parquet files waiting for upload, oldest first."""
    files = [p for p in outbox.rglob("*.parquet") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))
