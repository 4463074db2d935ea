"""The Postgres writer's own process: spooled batch files applied to Postgres, in the order given.

The bid logger's process folds events with the interpreter lock held for tens of milliseconds
at a time; a writer in a thread of that process fed each batch's COPY to Postgres only between
those stretches, and Postgres idled. Here the writer has an interpreter of its own. The logger
(``bidlogger.writer.Writer``) starts it with ``python -c`` and talks to it over its standard
input and output, in frames: a 4-byte big-endian length, then a msgpack array.

Requests: ``[id, "open", dsn, log_level, log_json]`` first (the connections are made at once,
when Postgres is up);
``[id, "apply", path, after]``, the batch spooled at ``path`` (``bidlogger.spool``) applied
once, its commit after that of request ``after`` (0: none) and not at all when that one failed;
``[id, "last_seq", logger_id]``, ``[id, "positions", logger_id]``; ``[id, "close"]``.
Replies: ``[id, kind, value, message, events]``, ``kind`` one of ``ok``, ``store`` (Postgres
unavailable: try again), ``rejected`` (the batch's content is refused: ``events`` is its
count), ``unreadable`` (the spooled file does not decode).

Batches go to two connections in turn; a request waits for its connection to be free (so the
logger may queue more than two: the next COPY starts as soon as a commit frees a connection,
without a round trip). The logger keeps the spool: what is not acknowledged is sent again,
to this process or to the next one, and Postgres recognises a batch applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
from typing import Any

import msgspec

from bidlogger.aggregate import decode_batch
from bidlogger.errors import BatchRejected, StoreError
from bidlogger.store import Store, _Days
from fleet.logs import configure_logging

log = logging.getLogger("bidlogger.writer")

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 26  # requests and replies are small: a larger length is a broken stream
KEEP_RESULTS = 64  # outcomes remembered for the ``after`` of later requests
_encoder = msgspec.msgpack.Encoder()


class _Refused(Exception):
    """A batch Postgres refused, with its event count (counted lost by the logger)."""

    def __init__(self, message: str, events: int) -> None:
        super().__init__(message)
        self.events = events


def frame(message: list[Any]) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


class _Chain:
    """The outcome of each recent apply, for the requests that come after it."""

    def __init__(self) -> None:
        self.tasks: dict[int, asyncio.Task[bool]] = {}

    def add(self, request_id: int, task: asyncio.Task[bool]) -> None:
        self.tasks[request_id] = task
        while len(self.tasks) > KEEP_RESULTS:
            oldest = next(iter(self.tasks))
            if not self.tasks[oldest].done():
                break
            del self.tasks[oldest]


class Child:
    """The writer's side: one request at a time read, applies concurrently on two connections."""

    def __init__(self, output: int) -> None:
        self.output = output
        self.stores: tuple[Store, Store] | None = None
        self.locks = (asyncio.Lock(), asyncio.Lock())
        self.turn = 0
        self.chain = _Chain()
        self.pending: set[asyncio.Task[None]] = set()

    def reply(
        self, request_id: int, kind: str, value: Any = None, message: str = "", events: int = 0
    ) -> None:
        data = frame([request_id, kind, value, message, events])
        view = memoryview(data)
        while view:  # small frames; the logger's reader thread drains the pipe
            written = os.write(self.output, view)
            view = view[written:]

    async def handle(self, message: list[Any]) -> bool:
        """One request; False after ``close``."""
        request_id, op = message[0], message[1]
        if op == "open":
            configure_logging(message[3], message[4])
            days = _Days()
            self.stores = (Store(message[2], days=days), Store(message[2], days=days))
            for store in self.stores:  # early, so that the first batch does not wait for it
                try:
                    await store.connect()
                except StoreError as exc:
                    log.warning("%s (tried again with the first batch)", exc)
                    break
            self.reply(request_id, "ok")
        elif op == "apply":
            self._start_apply(request_id, message[2], message[3])
        elif op in ("last_seq", "positions"):
            self._spawn(self._query(request_id, op, message[2]))
        elif op == "close":
            await self.close()
            self.reply(request_id, "ok")
            return False
        else:
            log.error("unknown request %r", op)
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def _start_apply(self, request_id: int, path: str, after: int) -> None:
        assert self.stores is not None, "open comes first"
        turn = self.turn
        self.turn ^= 1
        before = self.chain.tasks.get(after) if after else None
        if after and before is None:
            log.error("request %d: no outcome kept for request %d", request_id, after)
        task = asyncio.get_running_loop().create_task(self._apply(turn, path, before))
        self.chain.add(request_id, task)
        task.add_done_callback(lambda t: self._answer(request_id, t))

    async def _apply(self, turn: int, path: str, before: asyncio.Task[bool] | None) -> bool:
        assert self.stores is not None
        async with self.locks[turn]:  # the connection is free: the one before on it is done
            data = await asyncio.to_thread(_read, path)
            batch = decode_batch(data)
            try:
                return await self.stores[turn].apply(batch, before)
            except BatchRejected as exc:
                raise _Refused(str(exc), batch.events) from exc

    def _answer(self, request_id: int, task: asyncio.Task[bool]) -> None:
        if task.cancelled():
            self.reply(request_id, "store", message="cancelled")
            return
        exc = task.exception()
        if exc is None:
            self.reply(request_id, "ok", task.result())
        elif isinstance(exc, _Refused):
            self.reply(request_id, "rejected", message=str(exc), events=exc.events)
        elif isinstance(exc, StoreError):
            self.reply(request_id, "store", message=str(exc))
        elif isinstance(exc, (OSError, msgspec.DecodeError)):
            self.reply(request_id, "unreadable", message=str(exc))
        else:  # a bug: said here, and the batch stays spooled for another try
            log.error("applying request %d failed", request_id, exc_info=exc)
            self.reply(request_id, "store", message=f"internal error: {exc!r}")

    async def _query(self, request_id: int, op: str, logger_id: str) -> None:
        assert self.stores is not None
        store = self.stores[0]
        try:
            async with self.locks[0]:
                if op == "last_seq":
                    self.reply(request_id, "ok", await store.last_seq(logger_id))
                else:
                    positions = await store.positions(logger_id)
                    self.reply(request_id, "ok", msgspec.to_builtins(positions))
        except StoreError as exc:
            self.reply(request_id, "store", message=str(exc))

    async def close(self) -> None:
        for task in list(self.pending):
            await asyncio.wait([task], timeout=5.0)
        for applying in list(self.chain.tasks.values()):
            if not applying.done():
                await asyncio.wait([applying], timeout=5.0)
        if self.stores is not None:
            for store in self.stores:
                await store.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def _serve(child: Child) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    try:
        while True:
            try:
                head = await reader.readexactly(HEADER.size)
                (size,) = HEADER.unpack(head)
                if size > MAX_FRAME:
                    raise ValueError(f"a frame of {size} bytes")
                message = msgspec.msgpack.decode(await reader.readexactly(size))
            except asyncio.IncompleteReadError:  # the logger is gone: stop
                break
            if not await child.handle(message):
                return
    finally:
        await child.close()


def main() -> None:
    """The process: frames on stdin, replies on stdout (logs on stderr)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the logger stops it, with ``close``
    output = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot break a frame
    configure_logging()  # until ``open`` says how the logger logs
    asyncio.run(_serve(Child(output)))
