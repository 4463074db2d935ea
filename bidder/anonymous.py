"""Transaction ids for requests that could not be decoded (no request id, no imp id to use).

Each gets its own id, ``:~<run>-<n>:<bidder_id>``: an empty request id (a decoded request always
has one), then a run tag drawn once per process and a counter. The event bus partitions by a
hash of the txid, so these auction events spread over every partition like any other instead of
all landing in one hot partition, and a bid logger holding k of P partitions samples them at
k/P like the rest. The run tag keeps a restarted process from repeating the ids of its last run.
"""

from __future__ import annotations

import itertools
import random


class AnonymousTxids:
    """``next()``: a fresh txid per call; ``rng`` draws the run tag (once, here)."""

    __slots__ = ("_counter", "_prefix", "_suffix")

    def __init__(self, bidder_id: str, rng: random.Random) -> None:
        self._prefix = f":~{rng.getrandbits(32):08x}-"
        self._suffix = f":{bidder_id}"
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter)}{self._suffix}"
