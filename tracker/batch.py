"""A group commit's batch (``tracker.store.GroupCommitter``): the rows of the notices committed
together, whom each key's result goes to, and the one future all of them await."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.store import NoticeRow, RowResult

Outcomes = dict[tuple[str, str], "RowResult"]


class SharedFuture(asyncio.Future[Outcomes]):
    """A batch's one future, awaited by the task of every notice in it. A waiting task that is
    cancelled does not cancel it (the others still wait on it): that task is cancelled when
    the batch is answered."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class Batch:
    """The notices of one group commit: each submitter's rows (its ``ticket`` is its index),
    the first submitter of each key (whom its result goes to), and the batch's one future."""

    __slots__ = ("error", "failed", "future", "groups", "owners", "rows")

    def __init__(self, future: SharedFuture) -> None:
        self.rows: list[NoticeRow] = []
        self.groups: list[list[NoticeRow]] = []
        self.owners: dict[tuple[str, str], int] = {}
        self.future = future
        self.error = ""  # the whole batch could not be committed
        self.failed: dict[int, str] = {}  # tickets whose rows alone could not be committed
