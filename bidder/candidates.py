"""An imp's candidates as arrays, for the filters and bounds that run over all of them.

What the bid path does to every candidate of an imp before its internal auction runs over
columns: the maximum bid against the floor, the value bounds over each candidate's eligible
creatives, the eligible-opportunity count of each campaign (``bidder.imp_offers``). Frequency
caps, the creative choice, scoring and pricing are left for the candidates the race reaches, and
only those become ``Candidate`` objects (``get``).

The targeting index builds the set over arrays for imps without deals
(``TargetingIndex.candidate_set``); an imp with deals has its candidates as a list (each with
the deal it bids through) and the columns are read from that list (``from_list``).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from bidder.memo import BigKey, recall, remember
from bidder.openrtb import Imp
from bidder.shapes import RequestCreatives
from bidder.targeting import Candidate, TargetingIndex

# candidate sets remembered per index: requests repeat (campaigns, creatives) pairs, and a set
# is a few hundred KiB at 20,000 campaigns
_MEMO: Final = 64
_SEEN: Final = 1024  # hashes of the candidate-set keys seen once (``candidate_set``)

IntArray = npt.NDArray[np.intp]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]


class ShapeRuns(NamedTuple):
    """The creatives eligible for one imp shape (a creative mask), by campaign: run r is
    ``positions[starts[r]:starts[r + 1]]`` (increasing, of entry ``entries[r]``), runs in
    position order. ``entry_words`` and ``word_rows`` are ``run_words(entries, ...)``: what
    ``select_runs`` reads instead of the entries."""

    positions: IntArray
    starts: IntArray
    entries: IntArray
    eligible: dict[int, int]  # by entry: its run of creatives in the shape (bits from its first)
    entry_words: U64
    word_rows: I32

    def gather(self, rows: IntArray) -> tuple[IntArray, IntArray]:
        """The positions of runs ``rows``, one run after the other, and where each run begins
        in them (the end last): a few array passes however many runs."""
        lo = self.starts[rows]
        counts = self.starts[rows + 1] - lo
        starts = np.zeros(len(rows) + 1, dtype=np.intp)
        np.cumsum(counts, out=starts[1:])
        # position i of run g reads positions[lo[g] + i - starts[g]]
        at = np.arange(int(starts[-1]), dtype=np.intp) + np.repeat(lo - starts[:-1], counts)
        return self.positions[at], starts


class CandidateSet:
    """Candidate k is the campaign of entry ``entries[k]``, with maximum bid ``max_bids[k]``
    (bidding currency), frequency caps when ``capped[k]``, campaign id ``campaign_ids[k]``,
    and eligible creatives ``flat[starts[k]:starts[k + 1]]`` (positions in
    ``TargetingIndex.creatives``, increasing, at least one). A set over arrays also says
    which runs of its imp's shape its candidates are (``shape`` the creative mask, ``rows``
    into ``runs``): their creatives are those runs, and ``flat`` is made only when read; it
    may hold the caps flags by entry (``caps_by_entry``), read for the candidates the race
    reaches (``is_capped``) rather than gathered for all."""

    __slots__ = (
        "_capped",
        "_caps_by_entry",
        "_flat",
        "_get",
        "_made",
        "_starts",
        "campaign_ids",
        "deals",
        "entries",
        "max_bids",
        "rows",
        "runs",
        "shape",
    )

    def __init__(
        self,
        entries: IntArray,
        max_bids: npt.NDArray[np.int64],
        capped: npt.NDArray[np.bool_],
        campaign_ids: npt.NDArray[np.int64],
        flat: IntArray | None,
        starts: IntArray | None,
        get: Callable[[int], Candidate],
        *,
        deals: bool = False,
        shape: BigKey | None = None,
        runs: ShapeRuns | None = None,
        rows: IntArray | None = None,
        caps_by_entry: bool = False,
    ) -> None:
        self.entries = entries
        self.max_bids = max_bids
        self._capped = capped
        self._caps_by_entry = caps_by_entry
        self.campaign_ids = campaign_ids
        self._flat = flat
        self._starts = starts
        self.deals = deals  # some candidate bids through a deal
        self.shape = shape
        self.runs = runs
        self.rows = rows
        self._get = get
        self._made: dict[int, Candidate] = {}

    @property
    def capped(self) -> npt.NDArray[np.bool_]:
        """Whether each candidate's campaign has frequency caps."""
        if self._caps_by_entry:
            self._capped, self._caps_by_entry = self._capped[self.entries], False
        return self._capped

    def is_capped(self, k: int) -> bool:
        """Whether candidate k's campaign has frequency caps."""
        return bool(self._capped[self.entries[k]] if self._caps_by_entry else self._capped[k])

    @property
    def flat(self) -> IntArray:
        if self._flat is None:
            self._layout()
        assert self._flat is not None
        return self._flat

    @property
    def starts(self) -> IntArray:
        if self._starts is None:
            self._layout()
        assert self._starts is not None
        return self._starts

    def _layout(self) -> None:
        runs, rows = self.runs, self.rows
        assert runs is not None and rows is not None
        self._flat, self._starts = runs.gather(rows)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return len(self.entries) > 0

    def forget(self) -> None:
        """Drop the candidates made for an earlier request: a remembered set keeps its arrays,
        not objects that would age in the collector's young generations."""
        if self._made:
            self._made = {}

    def get(self, k: int) -> Candidate:
        """Candidate k as an object (made once)."""
        made = self._made.get(k)
        if made is None:
            made = self._made[k] = self._get(k)
        return made

    def __getitem__(self, k: int) -> Candidate:
        return self.get(k)

    def all(self) -> list[Candidate]:
        return [self.get(k) for k in range(len(self))]

    @property
    def counts(self) -> IntArray:
        counts: IntArray = np.diff(self.starts)
        return counts

    @classmethod
    def from_list(cls, candidates: Sequence[Candidate]) -> CandidateSet:
        n = len(candidates)
        entries = np.fromiter((c.entry.index for c in candidates), np.intp, n)
        max_bids = np.fromiter((c.entry.max_bid_micros for c in candidates), np.int64, n)
        capped = np.fromiter(
            (bool(c.entry.campaign.frequency_caps) for c in candidates), np.bool_, n
        )
        ids = np.fromiter((c.entry.campaign.id for c in candidates), np.int64, n)
        counts = np.fromiter((len(c.positions) for c in candidates), np.intp, n)
        starts = np.zeros(n + 1, dtype=np.intp)
        np.cumsum(counts, out=starts[1:])
        flat = np.fromiter((p for c in candidates for p in c.positions), np.intp, int(starts[-1]))
        deals = any(c.deal is not None for c in candidates)
        return cls(
            entries, max_bids, capped, ids, flat, starts, candidates.__getitem__, deals=deals
        )


def candidate_set(
    index: TargetingIndex,
    imp: Imp,
    request_mask: int,
    creative_mask: int | RequestCreatives,
    seat: str = "",
) -> CandidateSet:
    """``index.candidates(...)`` as a set: over arrays for an imp without deals, in the order
    of the candidates' first eligible creative; from the list otherwise."""
    found = index.imp_campaigns(imp, request_mask, creative_mask, seat)
    if found is None:
        return EMPTY
    m, shape, deals = found
    laid = index.eligible_positions(shape) if not deals else None
    if laid is None:
        return CandidateSet.from_list(index.candidates(imp, request_mask, creative_mask, seat))
    # ``m`` holds campaigns without deals only: no deal is open to the seat here
    key = BigKey(m, shape._hash)  # the shape's hash stands for it; equal keys are compared
    known: CandidateSet | None = recall(index.candidate_sets, key)
    if known is None or known.shape != shape:
        known = _over_arrays(index, m, shape, laid)
        # remembered from a key's second sighting: where campaign masks rarely repeat (a
        # mix of many audiences) a set would be stored and evicted unused on every imp,
        # tens of KiB at 20,000 campaigns each
        seen, hashed = index.candidate_keys_seen, hash(key)
        if hashed in seen:
            remember(index.candidate_sets, key, known, _MEMO)
        else:
            remember(seen, hashed, True, _SEEN)
    else:
        known.forget()
    return known


def _over_arrays(
    index: TargetingIndex, m: int, shape: BigKey, laid: tuple[IntArray, IntArray]
) -> CandidateSet:
    runs = shape_runs(index, shape, laid)
    max_bid_col, capped_col, id_col = index.entry_columns()
    wanted = little_words(m.to_bytes(8 * len(runs.entry_words), "little"))
    rows, entries, max_bids, ids = select_runs(
        wanted, runs.entries, runs.entry_words, runs.word_rows, max_bid_col, id_col
    )
    if not len(rows):
        return EMPTY
    eligible = runs.eligible
    make = index._candidate

    def get(k: int) -> Candidate:
        i = int(entries[k])
        return make(i, eligible[i])

    return CandidateSet(
        entries,
        max_bids,
        capped_col,
        ids,
        None,
        None,
        get,
        shape=shape,
        runs=runs,
        rows=rows,
        caps_by_entry=True,
    )


# the runs of the imp shapes seen, per index (an index's are its own: positions differ)
_RUNS: weakref.WeakKeyDictionary[TargetingIndex, OrderedDict[BigKey, ShapeRuns]] = (
    weakref.WeakKeyDictionary()
)
_RUNS_MEMO: Final = 32


def shape_runs(index: TargetingIndex, shape: BigKey, laid: tuple[IntArray, IntArray]) -> ShapeRuns:
    """The runs of the positions eligible for a shape (its creative mask, ``laid``: the
    positions and their entries, ``index.eligible_positions``), memoized per index and
    shape."""
    memo = _RUNS.get(index)
    if memo is None:
        memo = _RUNS[index] = OrderedDict()
    known: ShapeRuns | None = recall(memo, shape)
    if known is None:
        positions, owners = laid
        # an entry's positions are contiguous: a new run where the entry changes
        firsts = np.flatnonzero(owners[1:] != owners[:-1]) + 1
        groups = len(firsts) + 1 if len(positions) else 0
        starts = np.empty(groups + 1, dtype=np.intp)
        starts[0], starts[-1] = 0, len(positions)
        starts[1:-1] = firsts
        eligible = index._eligible(shape)[1]
        entries = owners[starts[:-1]]
        words, rows = run_words(entries, len(index.entries))
        known = ShapeRuns(positions, starts, entries, eligible, words, rows)
        remember(memo, shape, known, _RUNS_MEMO)
    return known


def little_words(data: bytes) -> U64:
    """Little-endian bytes (a multiple of 8) as 64-bit words in the host's order: bit i of
    ``data`` is bit i & 63 of word i >> 6, as a campaign mask's bits are its entries."""
    words: U64 = np.frombuffer(data, dtype="<u8").astype(np.uint64, copy=False)
    return words


def run_words(run_entries: IntArray, campaigns: int) -> tuple[U64, I32]:
    """The first runs whose entries increase (each under ``campaigns``) as a bitmap of their
    entries in words (``little_words``), and the number of those runs before each word (the
    last: all of them): a selection of runs by entry then reads the words rather than each
    run. After an incremental update (``bidder.index_update``) a changed campaign's run
    comes last, after larger entries: the runs from the first that breaks the order are
    left out, and ``select_runs`` reads them one by one."""
    n = len(run_entries)
    ordered = (run_entries >= 0) & (run_entries < campaigns)
    ordered[1:] &= run_entries[1:] > run_entries[:-1]
    head = n if ordered.all() else int(np.argmin(ordered))
    covered = run_entries[:head]
    count = (campaigns + 63) // 64
    flags = np.zeros(count * 64, dtype=np.uint8)
    flags[covered] = 1
    words = little_words(np.packbits(flags, bitorder="little").tobytes())
    bounds = np.arange(count + 1, dtype=np.intp) * 64
    rows: I32 = np.searchsorted(covered, bounds).astype(np.int32)
    return words, rows


def python_select_runs(
    wanted: U64,
    run_entries: IntArray,
    entry_words: U64,
    word_rows: I32,
    max_bid_col: I64,
    id_col: I64,
) -> tuple[IntArray, IntArray, I64, I64]:
    """The runs r (increasing) whose entry ``run_entries[r]`` has its bit set in ``wanted``
    (``little_words``), and the entry, maximum bid and campaign id of each (``max_bid_col``
    and ``id_col`` by entry): the reference of the compiled ``bidder._bounds.select_runs``.
    ``entry_words`` and ``word_rows`` (``run_words`` of the entries) only spare the compiled
    loop the runs it does not select; here the entries are read."""
    if len(id_col) != len(max_bid_col):
        raise ValueError("the columns differ in length")
    if len(word_rows) != len(entry_words) + 1 or not 0 <= word_rows[-1] <= len(run_entries):
        raise ValueError("the bitmap's rows do not fit the runs")
    as_bytes = wanted.astype("<u8").view(np.uint8)
    bits = np.unpackbits(as_bytes, bitorder="little")
    limit = min(len(bits), len(max_bid_col))
    if len(run_entries) and not (0 <= int(run_entries.min()) <= int(run_entries.max()) < limit):
        raise IndexError("an entry outside the mask or the columns")
    rows: IntArray = np.flatnonzero(bits[run_entries])
    entries = run_entries[rows]
    return rows, entries, max_bid_col[entries], id_col[entries]


select_runs: Callable[[U64, IntArray, U64, I32, I64, I64], tuple[IntArray, IntArray, I64, I64]]
try:
    from bidder._bounds import select_runs as _select_runs

    select_runs = _select_runs
except ImportError:  # pragma: no cover - the extension is built by `make`
    select_runs = python_select_runs


EMPTY = CandidateSet(
    np.zeros(0, dtype=np.intp),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.bool_),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.intp),
    np.zeros(1, dtype=np.intp),
    lambda k: [][k],
)

__all__ = [
    "EMPTY",
    "CandidateSet",
    "ShapeRuns",
    "candidate_set",
    "little_words",
    "python_select_runs",
    "run_words",
    "select_runs",
    "shape_runs",
]
