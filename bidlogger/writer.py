"""The Postgres writer, in a process of its own (``bidlogger.writer_child``), and its handle here.

The logger's consume task holds the interpreter lock for tens of milliseconds at a time while
events pour in. A writer thread in the same process fed each batch's COPY (megabytes) to
Postgres only between those stretches, and Postgres idled while the logger folded. In a process
of its own the writer has its own interpreter: Postgres gets the stream as fast as it takes it.

Nothing crosses but small frames: the batch itself is read by the writer from the file the
spool has just written, by its path (the page cache hands it over). :meth:`Writer.submit`
returns a future resolved by a reader thread here, so a reply does not wait for the event loop.
Batches are submitted oldest first, each committed after the one before it (and rolled back
when that one fails); the writer applies two at a time, on two connections, and queues the
rest, so the next COPY starts the moment a commit frees a connection.

The spool stays here, and with it the truth: a batch leaves it only once its reply says it is in
Postgres. A writer that dies fails every pending future (``StoreError``: Postgres unavailable,
try again); the next submission starts a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import msgspec

from bidlogger.errors import BatchRejected, SpoolError, StoreError
from bidlogger.positions import Position
from bidlogger.writer_child import HEADER, MAX_FRAME, frame

log = logging.getLogger("bidlogger.writer")

DEPTH = 4  # batches submitted at once: two applied, two queued behind them in the writer
CLOSE_TIMEOUT = 10.0
_COMMAND = "from bidlogger.writer_child import main; main()"


class Request(concurrent.futures.Future[Any]):
    """A request's reply; ``request_id`` names it to the writer process that has it."""

    def __init__(self, request_id: int, process: subprocess.Popen[bytes] | None) -> None:
        super().__init__()
        self.request_id = request_id
        self.process = process


class Writer:
    """``start()`` (or the first call starts it), ``submit()``; ``close()`` or ``terminate()``."""

    depth = DEPTH

    def __init__(self, dsn: str, *, log_level: str = "INFO", log_json: bool = False) -> None:
        self.dsn = dsn
        self.log_level = log_level
        self.log_json = log_json
        self.started = 0  # writer processes started so far
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None  # the current process's reply reader
        self._pending: dict[int, Request] = {}
        self._lock = threading.Lock()  # the process, the pending requests, writes to the pipe

    # -- the process --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start the writer process if none runs (it connects to Postgres at once)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is not None and process.poll() is None:
            return process
        process = subprocess.Popen(
            [sys.executable, "-c", _COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._process = process
        self.started += 1
        assert process.stdout is not None
        self._reader = threading.Thread(
            target=self._read_replies,
            args=(process, process.stdout),
            name="bidlogger-writer-replies",
            daemon=True,
        )
        self._reader.start()
        self._send_locked(
            process,
            Request(next(self._ids), process),
            ["open", self.dsn, self.log_level, self.log_json],
        )
        return process

    def _send_locked(
        self, process: subprocess.Popen[bytes], request: Request, body: list[Any]
    ) -> Request:
        """Send ``body`` as ``request`` (the lock held); a broken pipe fails it at once."""
        assert process.stdin is not None
        self._pending[request.request_id] = request
        try:
            process.stdin.write(frame([request.request_id, *body]))
            process.stdin.flush()
        except (OSError, ValueError) as exc:  # the writer is gone; its reader fails the rest
            self._pending.pop(request.request_id, None)
            if not request.done():
                request.set_exception(StoreError(f"the writer process is gone: {exc}"))
        return request

    def _request(self, body: list[Any]) -> Request:
        with self._lock:
            process = self._start_locked()
            return self._send_locked(process, Request(next(self._ids), process), body)

    def _read_replies(self, process: subprocess.Popen[bytes], stream: IO[bytes]) -> None:
        """The reader thread of one writer process: replies to their futures, until EOF."""
        try:
            while True:
                head = _read_exactly(stream, HEADER.size)
                if head is None:
                    break
                (size,) = HEADER.unpack(head)
                body = _read_exactly(stream, size) if size <= MAX_FRAME else None
                if body is None:
                    break
                request_id, kind, value, message, events = msgspec.msgpack.decode(body)
                with self._lock:
                    request = self._pending.pop(request_id, None)
                if request is not None and not request.done():
                    _resolve(request, kind, value, message, events)
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            log.error("the writer process's replies broke off: %s", exc)
        finally:
            code = process.wait()
            with self._lock:
                gone = [r for r in self._pending.values() if r.process is process]
                for r in gone:
                    del self._pending[r.request_id]
                if self._process is process:
                    self._process = None
                for pipe in (process.stdin, stream):
                    if pipe is not None:
                        with contextlib.suppress(OSError):
                            pipe.close()
            for r in gone:
                if not r.done():
                    r.set_exception(StoreError(f"the writer process exited ({code})"))
            if code not in (0, None) and gone:
                log.warning(
                    "the writer process exited (%s); %d request(s) to retry", code, len(gone)
                )

    # -- requests -----------------------------------------------------------------------------
    def submit(self, seq: int, path: Path, before: Request | None = None) -> Request:
        """Apply the batch spooled as ``path`` (flush ``seq``); True once committed, False when
        it had been applied already. ``before``: the batch submitted just before it, still in
        flight: this one commits after it, and not at all when it fails."""
        after = 0
        if before is not None:
            if before.done():
                if before.cancelled() or before.exception() is not None:
                    failed = Request(0, None)
                    failed.set_exception(
                        StoreError(f"batch {seq} not applied: the one before it failed")
                    )
                    return failed
            else:
                after = before.request_id
        with self._lock:
            process = self._start_locked()
            if after and before is not None and before.process is not process:
                after = 0  # its writer is gone, and it failed with it (or is about to)
            return self._send_locked(
                process, Request(next(self._ids), process), ["apply", os.fspath(path), after]
            )

    async def last_seq(self, logger_id: str) -> int:
        return int(await asyncio.wrap_future(self._request(["last_seq", logger_id])))

    async def positions(self, logger_id: str) -> list[Position]:
        rows = await asyncio.wrap_future(self._request(["positions", logger_id]))
        return msgspec.convert(rows, list[Position])

    async def close(self) -> None:
        """Let the writer finish what it has and close its connections; then it exits."""
        with self._lock:
            process, reader = self._process, self._reader
            if process is None or reader is None:
                return
            request = self._send_locked(process, Request(next(self._ids), process), ["close"])
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(request), CLOSE_TIMEOUT)
        try:
            await asyncio.to_thread(process.wait, CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
        await asyncio.to_thread(reader.join)  # it closes the pipes once the process is gone

    def terminate(self) -> None:
        """Stop the writer now (Postgres rolls back what it had not committed)."""
        with self._lock:
            process, reader = self._process, self._reader
        if process is not None and process.poll() is None:
            process.kill()
        if reader is not None:
            reader.join(CLOSE_TIMEOUT)


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def _resolve(request: Request, kind: str, value: Any, message: str, events: int) -> None:
    if kind == "ok":
        request.set_result(value)
    elif kind == "rejected":
        request.set_exception(BatchRejected(message, events=events))
    elif kind == "unreadable":
        request.set_exception(SpoolError(f"spooled batch unreadable: {message}"))
    else:
        request.set_exception(StoreError(message))
