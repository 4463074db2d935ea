"""The Postgres writer on an event loop of its own, in its own thread.

The consume task keeps the service's event loop busy for tens of milliseconds at a time while
events pour in; a COPY of a raw-sample batch (megabytes) driven from that loop would be fed to
Postgres only between those stretches, and Postgres would idle. Here the store's connection
lives on a second loop in a thread that does nothing else: the stream goes out as fast as
Postgres takes it (socket writes release the GIL), while the service's loop folds the next
events. The batch handed over is immutable; :class:`ThreadedStore` has the async interface of
the :class:`~bidlogger.store.Store` it drives, and every call runs on the writer's loop.

:meth:`ThreadedStore.submit` keeps two batches in flight on two connections: the second's raw
COPY runs while the first is applied, and the rest of the second waits for the first's commit
(``Store.apply``'s ``before``), so batches still land in flush order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from bidlogger.aggregate import Batch
from bidlogger.positions import Position
from bidlogger.store import Store, _Days

T = TypeVar("T")
JOIN_TIMEOUT = 5.0


async def _apply_after(
    store: Store, batch: Batch, before: concurrent.futures.Future[bool] | None
) -> bool:
    """On the writer's loop: ``batch`` applied, its commit after ``before``'s."""
    waits: asyncio.Future[bool] | None = None if before is None else asyncio.wrap_future(before)
    return await store.apply(batch, waits)


class ThreadedStore:
    """A :class:`Store` whose calls run on the loop of a thread started on the first call."""

    def __init__(self, dsn: str, *, name: str = "bidlogger-writer") -> None:
        days = _Days()
        self.store = Store(dsn, days=days)
        self.stores = (self.store, Store(dsn, days=days))  # submit() alternates between them
        self._turn = 0
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._run, args=(loop,), name=self.name, daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:  # what a terminate() cut short ends here, not in a destroyed pending task
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` on the writer's loop; cancelling the caller cancels it there too."""
        future = asyncio.run_coroutine_threadsafe(coro, self._running_loop())
        return await asyncio.wrap_future(future)

    async def apply(self, batch: Batch) -> bool:
        return await self._call(self.store.apply(batch))

    def submit(
        self, batch: Batch, before: concurrent.futures.Future[bool] | None = None
    ) -> concurrent.futures.Future[bool]:
        """Start applying ``batch`` on the next connection; ``before``: the batch submitted just
        before it, still in flight (its commit comes first). Consecutive submissions use
        different connections, so two in flight never share one."""
        store = self.stores[self._turn]
        self._turn ^= 1
        return asyncio.run_coroutine_threadsafe(
            _apply_after(store, batch, before), self._running_loop()
        )

    async def last_seq(self, logger_id: str) -> int:
        return await self._call(self.store.last_seq(logger_id))

    async def positions(self, logger_id: str) -> list[Position]:
        return await self._call(self.store.positions(logger_id))

    async def close(self) -> None:
        """Close the connection, then stop the thread."""
        if self._loop is None:
            return
        try:
            for store in self.stores:
                await self._call(store.close())
        finally:
            await asyncio.to_thread(self._stop)

    def terminate(self) -> None:
        """Drop the connection and stop the thread now."""
        loop = self._loop
        if loop is None:
            return
        if not loop.is_closed():
            for store in self.stores:
                loop.call_soon_threadsafe(store.terminate)
        self._stop()

    def _stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(JOIN_TIMEOUT)
