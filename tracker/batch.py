"""A group commit's batch (``tracker.store.GroupCommitter``): the rows of the notices committed
together, whom each key's result goes to, and the one future that answers all of them (awaited,
or with one done callback that settles every notice's answer: ``waiting``)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec


class NoticeRow(msgspec.Struct, frozen=True):
    """One (txid, kind) to count, with what its effects need. (Structs, not dataclasses: one
    or two are made per notice, and a frozen dataclass costs several times as much.)"""

    kind: str  # win, bill, loss, imp, click, freq
    txid: str
    campaign_id: int
    creative_id: int
    price_micros: int  # clearing CPM in ``currency`` (0 when unknown)
    currency: str
    at: float  # fleet time, seconds since the epoch
    user_key: str = ""
    click_id: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.txid, self.kind)


class RowResult(msgspec.Struct, frozen=True):
    counted: bool  # False: a duplicate (or unpriced)
    cost_micros: int = 0  # what a billing notice added, campaign currency
    unpriced: bool = False  # a billing notice whose campaign or exchange rate is gone: not counted


Outcomes = dict[tuple[str, str], RowResult]


class SharedFuture(asyncio.Future[Outcomes]):
    """A batch's one future, awaited by the task of every notice in it. A waiting task that is
    cancelled does not cancel it (the others still wait on it): that task is cancelled when
    the batch is answered."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class Batch:
    """The notices of one group commit: each submitter's rows (its ``ticket`` is its index),
    the first submitter of each key (whom its result goes to), and the batch's one future.
    ``waiting``: what a caller answers when the future is done, with one callback for the
    whole batch (the HTTP route's notices and their answers' futures)."""

    __slots__ = ("error", "failed", "future", "groups", "owners", "rows", "waiting")

    def __init__(self, future: SharedFuture) -> None:
        self.rows: list[NoticeRow] = []
        self.groups: list[list[NoticeRow]] = []
        self.owners: dict[tuple[str, str], int] = {}
        self.future = future
        self.error = ""  # the whole batch could not be committed
        self.failed: dict[int, str] = {}  # tickets whose rows alone could not be committed
        self.waiting: list[Any] = []
