"""The local disk: the batch spool and the logger's state file.

Every flush writes its batch here first (``<seq>.batch``, written to a temporary name and renamed,
so a crash leaves a whole file or none); the writer applies the files to Postgres oldest first and
deletes each once applied. While Postgres is down the files pile up, up to ``max_bytes``; past it
a batch is refused (the caller counts its events as lost to ``spool_full``). A batch applied
twice (a crash between commit and delete) is recognised by Postgres from its (logger, seq).

The state file holds the next flush sequence and the bus positions of the last spooled batch,
so that a restarted logger continues the sequence and counts what it missed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from bidlogger.aggregate import Batch, decode_batch, encode_batch
from bidlogger.errors import SpoolError
from bidlogger.positions import Position

SUFFIX = ".batch"


class State(msgspec.Struct, frozen=True):
    next_seq: int
    positions: list[Position]


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(State)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Spool:
    """Batches on disk, in sequence order, bounded in bytes. Not thread-safe: one owner."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.directory = directory
        self.max_bytes = max_bytes
        self.bad_directory = directory / "bad"
        self._sizes: dict[int, int] = {}
        self.bytes = 0
        self.refused = 0  # batches refused for lack of room
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for path in directory.glob(f"*{SUFFIX}"):
                seq = int(path.stem) if path.stem.isdigit() else -1
                if seq < 0:
                    continue
                size = path.stat().st_size
                self._sizes[seq] = size
                self.bytes += size
            for leftover in directory.glob("*.tmp"):
                leftover.unlink()
        except OSError as exc:
            raise SpoolError(f"spool {directory}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._sizes)

    def path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    @property
    def last_seq(self) -> int:
        return max(self._sizes, default=0)

    def put(self, batch: Batch) -> bool:
        """Write ``batch``; False when the spool has no room for it (nothing is written).

        The raw sample goes as the batch's COPY stream alone, the bytes the writer sends (the
        chunks are for the Parquet segments, which the flush fills from memory)."""
        if batch.chunks or (batch.raw_copy and batch.raw):
            batch = msgspec.structs.replace(
                batch, raw=batch.raw if not batch.raw_copy else [], chunks=[]
            )
        data = encode_batch(batch)
        if self.bytes + len(data) > self.max_bytes:
            self.refused += 1
            return False
        try:
            write_atomically(self.path(batch.seq), data)
        except OSError as exc:
            raise SpoolError(f"cannot write batch {batch.seq}: {exc}") from exc
        self._sizes[batch.seq] = len(data)
        self.bytes += len(data)
        return True

    def oldest(self) -> int | None:
        return min(self._sizes) if self._sizes else None

    def oldest_after(self, seq: int) -> int | None:
        """The oldest spooled batch after ``seq`` (the writer's next while ``seq`` is in flight)."""
        return min((s for s in self._sizes if s > seq), default=None)

    def read(self, seq: int) -> Batch:
        """The batch ``seq``; a file that does not decode is moved to ``bad/`` (SpoolError)."""
        path = self.path(seq)
        try:
            return decode_batch(path.read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            self.bad_directory.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                os.replace(path, self.bad_directory / path.name)
            self._forget(seq)
            raise SpoolError(f"spooled batch {path.name} is unreadable: {exc}") from exc

    def quarantine(self, seq: int) -> None:
        """Move batch ``seq`` to ``bad/`` (kept for inspection, never replayed)."""
        path = self.path(seq)
        self.bad_directory.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            os.replace(path, self.bad_directory / path.name)
        self._forget(seq)

    def remove(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(seq).unlink()
        self._forget(seq)

    def _forget(self, seq: int) -> None:
        self.bytes -= self._sizes.pop(seq, 0)

    # -- the state file -----------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.directory / "state"

    def save_state(self, state: State) -> None:
        try:
            write_atomically(self.state_path, _state_encoder.encode(state))
        except OSError as exc:
            raise SpoolError(f"cannot write {self.state_path}: {exc}") from exc

    def load_state(self) -> State | None:
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SpoolError(f"cannot read {self.state_path}: {exc}") from exc
        try:
            return _state_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise SpoolError(f"{self.state_path} is unreadable: {exc}") from exc
