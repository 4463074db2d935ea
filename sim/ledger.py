"""The exchange's books: one row per impression opportunity offered, plus notice counters.

Rows are kept in typed arrays (compact at a few hundred thousand rows) and handed to the report
as numpy columns (``AuctionTable``). Running totals (spend, wins, ...) are kept separately as the
exchange goes; the report's consistency check recomputes them from the rows.
"""

from __future__ import annotations

import collections
import dataclasses
from array import array
from typing import Any, Final

import numpy as np
import numpy.typing as npt

# Row outcomes, in the order an answer can get: each is exclusive.
NOT_SENT: Final = 0  # the client never sent it (saturated, refused, stopped)
ERROR: Final = 1  # connection reset, not HTTP, not a bid response
TIMEOUT: Final = 2  # no answer by tmax + slack
LATE: Final = 3  # an answer after tmax: ignored by the auction
NO_BID: Final = 4
INVALID: Final = 5  # a bid the exchange threw out (loss reason says why)
LOST: Final = 6
WON: Final = 7
OUTCOME_NAMES: Final = ("not_sent", "error", "timeout", "late", "no_bid", "invalid", "lost", "won")

NOTICE_KINDS: Final = ("win", "billing", "loss", "impression", "click", "install", "event")

_COLUMNS: Final = {
    # name: array typecode
    "req": "l",
    "t_sim": "d",  # simulated seconds since the start
    "deadline_ms": "l",
    "latency_ms": "d",  # -1: no answer
    "status": "l",
    "outcome": "b",
    "loss_reason": "l",
    "auction_type": "b",
    "campaign_id": "q",  # -1: no bid, or a cid that is not a number
    "creative_id": "q",
    "bid_usd_micros": "q",  # CPM
    "floor_usd_micros": "q",  # the floor this bid was held to (deal floor for deal bids)
    "clear_usd_micros": "q",  # what the winner pays (CPM); 0 unless won
    # TRUE median of the best competing bid of an open auction (CPM; 0 for a deal's slot)
    "market_median_usd_micros": "q",
    "billed": "b",
    "clicked": "b",
    "installed": "b",
    "p_click": "f",  # TRUE probabilities for the bid's campaign (0 without a bid)
    "p_install": "f",
    "crawler": "b",
    "no_consent": "b",  # GDPR applies and purposes 1-4 or our vendor were not granted
    "coppa": "b",
    "stalled": "b",  # late or timed out only because this process's own loop was stalled
    "user": "q",  # the user's index in the market's population
    "personal": "b",  # privacy lets the bidder use what it knows of the user (its segments)
}


@dataclasses.dataclass
class AuctionTable:
    """The rows as numpy arrays, one attribute per column (see ``_COLUMNS``)."""

    columns: dict[str, npt.NDArray[Any]]

    def __len__(self) -> int:
        return len(self.columns["req"])

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.columns[name]

    def copy(self) -> AuctionTable:
        return AuctionTable({k: v.copy() for k, v in self.columns.items()})

    @classmethod
    def empty(cls) -> AuctionTable:
        return Ledger().table()


@dataclasses.dataclass
class NoticeCounts:
    """Per kind: how many follow-ups were due, sent and answered, and what went wrong."""

    due: int = 0
    sent: int = 0
    answered: int = 0  # any HTTP status
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    unanswered: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    pending_at_end: int = 0  # due after the run ended: never sent
    duplicates: int = 0


class Ledger:
    def __init__(self) -> None:
        self._cols: dict[str, array[Any]] = {name: array(code) for name, code in _COLUMNS.items()}
        self.requests = 0  # scheduled
        self.sent = 0
        self.answered = 0
        self.request_statuses: collections.Counter[int] = collections.Counter()
        self.request_errors: collections.Counter[str] = collections.Counter()
        self.latencies_ms = array("d")  # every answered request
        self.late_ms = array("d")  # how late each late answer was
        self.lag_ms = array("d")  # how long after its due time each request was sent
        self.stall_seconds = 0.0  # this process's own event loop, stalled (CPU starved, ...)
        self.late_in_stalls = 0  # late answers explained by those stalls
        self.timeouts_in_stalls = 0
        self.bids = 0
        self.wins = 0
        self.billed = 0
        self.spend_usd_micros: collections.Counter[int] = collections.Counter()  # by campaign
        self.notices = {kind: NoticeCounts() for kind in NOTICE_KINDS}
        self.clicks = 0
        self.installs = 0
        self.events = 0
        self.revenue_micros = 0
        self.gzip_sent = 0
        self.versions: collections.Counter[str] = collections.Counter()
        self.request_index: dict[str, int] = {}  # request id -> first row
        # (user index, campaign id) -> simulated times the user was shown the campaign: what
        # the report's frequency check holds against the campaign's caps
        self.shown: dict[tuple[int, int], list[float]] = collections.defaultdict(list)

    def __len__(self) -> int:
        return len(self._cols["req"])

    def add_row(self, **values: float) -> int:
        """Append a row; columns not given are 0 (latency -1, ids -1)."""
        row = len(self)
        for name, column in self._cols.items():
            default = -1 if name in ("latency_ms", "campaign_id", "creative_id") else 0
            column.append(values.get(name, default))
        return row

    def set(self, row: int, name: str, value: float) -> None:
        self._cols[name][row] = value

    def get(self, row: int, name: str) -> Any:
        return self._cols[name][row]

    def bill(self, row: int) -> int:
        """The impression in ``row`` rendered and is billed once; returns its cost in micros."""
        if self._cols["billed"][row]:
            return 0
        self._cols["billed"][row] = 1
        cost = int(self._cols["clear_usd_micros"][row]) // 1000
        self.billed += 1
        self.spend_usd_micros[int(self._cols["campaign_id"][row])] += cost
        return cost

    def show(self, row: int, user: int, t_sim: float) -> None:
        """The impression in ``row`` was shown to user ``user`` at ``t_sim``."""
        self.shown[(user, int(self._cols["campaign_id"][row]))].append(t_sim)

    def notice(self, kind: str, status: int, error: str) -> None:
        counts = self.notices[kind]
        if status:
            counts.answered += 1
            counts.statuses[status] += 1
        else:
            counts.unanswered[error or "unknown"] += 1

    def table(self) -> AuctionTable:
        dtypes = {"l": np.int64, "q": np.int64, "d": np.float64, "f": np.float32, "b": np.int8}
        return AuctionTable(
            {
                name: np.frombuffer(column, dtype=dtypes[_COLUMNS[name]]).copy()
                if len(column)
                else np.zeros(0, dtype=dtypes[_COLUMNS[name]])
                for name, column in self._cols.items()
            }
        )
