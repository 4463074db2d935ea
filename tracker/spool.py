"""A bounded, ordered spool of records on disk: what waits for Kinesis.

Segment files ``<sequence>.seg`` hold records framed as a 4-byte big-endian length and the bytes;
``cursor`` holds the segment and offset of the first record not yet delivered, replaced
atomically (write, fsync, rename) after each delivery. Appends are fsynced. After a crash, a
record cut short at the end of the last segment is dropped (it was never acknowledged as
spooled), and records after the cursor are sent again: at-least-once.

Not thread-safe: one thread (the Kinesis sender) owns it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Final

from tracker.errors import KinesisError

_LENGTH: Final = struct.Struct(">I")
SEGMENT_BYTES: Final = 8 * 1024 * 1024
MAX_RECORD_BYTES: Final = 2 * 1024 * 1024


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KinesisError(f"cannot create the spool directory {directory}: {exc}") from exc
        self._segments: list[int] = sorted(
            int(p.stem) for p in directory.glob("*.seg") if p.stem.isdigit()
        )
        self._cursor = self._read_cursor()
        self._segments = [s for s in self._segments if s >= self._cursor[0]] or []
        for stale in directory.glob("*.seg"):
            if stale.stem.isdigit() and int(stale.stem) < self._cursor[0]:
                stale.unlink()
        if self._segments:
            self._repair_tail(self._segments[-1])
        else:
            self._segments = [self._cursor[0]]
            self._path(self._cursor[0]).touch()
        self.records, self.bytes = self._scan()

    # -- files -----------------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return int(segment), int(offset)
        except FileNotFoundError:
            return (self._segments[0] if self._segments else 0), 0
        except ValueError as exc:
            raise KinesisError(f"the spool cursor in {self.directory} is unreadable") from exc

    def _write_cursor(self) -> None:
        temp = self.directory / "cursor.tmp"
        with open(temp, "w") as f:
            f.write(f"{self._cursor[0]} {self._cursor[1]}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.directory / "cursor")

    def _repair_tail(self, segment: int) -> None:
        """Cut a record written only in part (a crash during an append)."""
        path = self._path(segment)
        data = path.read_bytes()
        good = 0
        while good + 4 <= len(data):
            (length,) = _LENGTH.unpack_from(data, good)
            if good + 4 + length > len(data):
                break
            good += 4 + length
        if good != len(data):
            with open(path, "r+b") as f:
                f.truncate(good)

    def _scan(self) -> tuple[int, int]:
        records = size = 0
        for segment in self._segments:
            data = self._path(segment).read_bytes()
            offset = self._cursor[1] if segment == self._cursor[0] else 0
            size += len(data) - offset
            while offset + 4 <= len(data):
                (length,) = _LENGTH.unpack_from(data, offset)
                offset += 4 + length
                records += 1
        return records, size

    # -- the spool -------------------------------------------------------------------------

    def append(self, records: list[bytes]) -> int:
        """Append in order as many of ``records`` as fit; returns how many were spooled."""
        accepted = 0
        frames = []
        for record in records:
            if len(record) > MAX_RECORD_BYTES:
                raise KinesisError("a record of more than 2 MiB cannot be spooled")
            framed = _LENGTH.pack(len(record)) + record
            if self.bytes + len(framed) > self.max_bytes:
                break
            frames.append(framed)
            self.bytes += len(framed)
            accepted += 1
        if not frames:
            return 0
        last = self._segments[-1]
        if self._path(last).stat().st_size >= self.segment_bytes:
            last += 1
            self._segments.append(last)
        with open(self._path(last), "ab") as f:
            f.write(b"".join(frames))
            f.flush()
            os.fsync(f.fileno())
        self.records += accepted
        return accepted

    def peek(self, max_records: int, max_bytes: int = 6 * 1024 * 1024) -> list[bytes]:
        """Up to ``max_records`` records from the cursor on, in order, reading about
        ``max_bytes`` at most (at least one record): what the next call can send."""
        out: list[bytes] = []
        size = 0
        segment, offset = self._cursor
        for seg in self._segments[self._segments.index(segment) :]:
            with open(self._path(seg), "rb") as f:
                f.seek(offset if seg == segment else 0)
                while len(out) < max_records and (not out or size < max_bytes):
                    head = f.read(4)
                    if len(head) < 4:
                        break
                    (length,) = _LENGTH.unpack(head)
                    data = f.read(length)
                    if len(data) < length:
                        break
                    out.append(data)
                    size += 4 + length
            if len(out) >= max_records or size >= max_bytes:
                break
        return out

    def commit(self, count: int) -> None:
        """The first ``count`` records from the cursor were delivered: move past them, and drop
        the segments left behind. Reads only the records' lengths."""
        segment, offset = self._cursor
        left = count
        while True:
            path = self._path(segment)
            end = path.stat().st_size
            with open(path, "rb") as f:
                while left > 0 and offset + 4 <= end:
                    f.seek(offset)
                    (length,) = _LENGTH.unpack(f.read(4))
                    offset += 4 + length
                    self.bytes -= 4 + length
                    self.records -= 1
                    left -= 1
            if offset < end or segment == self._segments[-1]:
                if left > 0:
                    raise KinesisError("committed more records than the spool holds")
                break
            path.unlink()  # every record of this segment is delivered
            self._segments.pop(0)
            segment, offset = self._segments[0], 0
        self._cursor = (segment, offset)
        self._write_cursor()
