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

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from bidder.openrtb import Imp
from bidder.targeting import Candidate, TargetingIndex, _recall, _remember

# candidate sets remembered per index: requests repeat (campaigns, creatives) pairs, and a set
# is a few hundred KiB at 20,000 campaigns
_MEMO: Final = 64

IntArray = npt.NDArray[np.intp]


class CandidateSet:
    """Candidate k is the campaign of entry ``entries[k]``, with maximum bid ``max_bids[k]``
    (bidding currency), frequency caps when ``capped[k]``, campaign id ``campaign_ids[k]``,
    and eligible creatives ``flat[starts[k]:starts[k + 1]]`` (positions in
    ``TargetingIndex.creatives``, increasing, at least one)."""

    __slots__ = (
        "_get",
        "_made",
        "campaign_ids",
        "capped",
        "deals",
        "entries",
        "flat",
        "max_bids",
        "starts",
    )

    def __init__(
        self,
        entries: IntArray,
        max_bids: npt.NDArray[np.int64],
        capped: npt.NDArray[np.bool_],
        campaign_ids: npt.NDArray[np.int64],
        flat: IntArray,
        starts: IntArray,
        get: Callable[[int], Candidate],
        *,
        deals: bool = False,
    ) -> None:
        self.entries = entries
        self.max_bids = max_bids
        self.capped = capped
        self.campaign_ids = campaign_ids
        self.flat = flat
        self.starts = starts
        self.deals = deals  # some candidate bids through a deal
        self._get = get
        self._made: dict[int, Candidate] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return len(self.entries) > 0

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
    index: TargetingIndex, imp: Imp, request_mask: int, creative_mask: int, seat: str = ""
) -> CandidateSet:
    """``index.candidates(...)`` as a set: over arrays for an imp without deals, in the order
    of the candidates' first eligible creative; from the list otherwise."""
    found = index.imp_campaigns(imp, request_mask, creative_mask, seat)
    if found is None:
        return EMPTY
    m, creative_ok, deals = found
    laid = index.eligible_positions(creative_ok) if not deals else None
    if laid is None:
        return CandidateSet.from_list(index.candidates(imp, request_mask, creative_mask, seat))
    m &= index.no_deal
    key = (m, creative_ok)
    known: CandidateSet | None = _recall(index.candidate_sets, key)
    if known is None:
        known = _over_arrays(index, m, creative_ok, laid)
        _remember(index.candidate_sets, key, known, _MEMO)
    return known


def _over_arrays(
    index: TargetingIndex, m: int, creative_ok: int, laid: tuple[IntArray, IntArray]
) -> CandidateSet:
    positions, owners = laid
    n_entries = len(index.entries)
    raw = np.frombuffer(m.to_bytes((n_entries + 7) // 8, "little"), dtype=np.uint8)
    wanted = np.unpackbits(raw, count=n_entries, bitorder="little").view(np.bool_)
    keep = wanted[owners]
    flat = positions[keep]
    if not len(flat):
        return EMPTY
    own = owners[keep]
    # an entry's positions are contiguous: a new candidate where the entry changes
    firsts = np.flatnonzero(own[1:] != own[:-1]) + 1
    starts = np.empty(len(firsts) + 2, dtype=np.intp)
    starts[0], starts[-1] = 0, len(flat)
    starts[1:-1] = firsts
    entries = own[starts[:-1]]
    max_bids, capped, ids = index.entry_columns()
    runs = index._eligible(creative_ok)[1]
    make = index._candidate

    def get(k: int) -> Candidate:
        i = int(entries[k])
        return make(i, runs[i])

    return CandidateSet(
        entries, max_bids[entries], capped[entries], ids[entries], flat, starts, get
    )


EMPTY = CandidateSet(
    np.zeros(0, dtype=np.intp),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.bool_),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.intp),
    np.zeros(1, dtype=np.intp),
    lambda k: [][k],
)

__all__ = ["EMPTY", "CandidateSet", "candidate_set"]
