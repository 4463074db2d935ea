"""The garbage collector's policy for a bidder process: the long-lived data out of its way.

CPython's full collection walks every container object the collector tracks. At 20,000
campaigns the config snapshot, the targeting index and the scorer's tables are millions of
them, and one full pass paused a bidder for up to 171 ms (2 in 6,000 requests of the bench's
mix, in process): alone enough to break a 10 ms p99. Those objects live until the next
snapshot, so after each install ``LongLived.installed`` moves every tracked object to the
permanent generation (``gc.freeze``), which no collection visits; the collections that remain
walk the objects of the requests in flight only.

The trade-off. ``gc.freeze`` moves *everything* tracked at that moment: the new snapshot, and
whatever of the previous one is still referenced (by a request in flight, a memo), and a few
request objects. A frozen object is still freed by reference counting when its last
reference goes (the snapshot, the index and the scorer's tables are trees: structs, dicts,
lists and arrays without reference cycles), but frozen garbage *in a cycle* is never collected
while frozen. So each install first gives the permanent generation back (``gc.unfreeze``) and,
when it has grown by more than ``growth`` since the last full collection (CPython's own rule
for full collections is a quarter), collects everything once before freezing again: a pause as
long as the old ones, but at most once per quarter of growth of the heap and right after a
config change (the apply already took a worker thread tens of milliseconds to seconds), not at
a random request. Between those collections, cyclic garbage of replaced snapshots is held (at
most ``growth`` of the heap). Run this on the event loop's thread: the pause is the loop's
either way (the collector holds the GIL), and no request is half-way through a step.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass


@dataclass
class LongLived:
    """Freezes the heap after every install; collects it first when it grew by ``growth``."""

    growth: float = 0.25
    # permanent-generation size after the last full collection (0: none yet, so the first
    # install collects: start-up's garbage goes before the freeze)
    collected_at: int = 0
    collections: int = 0  # full collections this ran
    last_pause: float = 0.0  # seconds the last one took
    freezes: int = 0
    settles: int = 0  # freezes after a full pass of the collector (``settle``)
    full_passes: int = 0  # the collector's own full passes seen since ``watch``
    _settled_at: int = 0
    _collecting: bool = False

    def installed(self) -> None:
        """Call after a snapshot (or anything long-lived) is swapped in."""
        self._freeze()

    def watch(self) -> None:
        """Count the collector's full passes (a ``gc.callbacks`` entry) for ``settle``."""
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def unwatch(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def settle(self) -> bool:
        """Call every second or so on the event loop's thread: when the collector made a full
        pass since the last call, what survived it (the memos of the bid path, connections)
        joins the frozen heap, so that the next full pass walks only what is newer. Without
        this, at 20,000 campaigns each full pass walked ~50,000 memo objects and paused the
        loop for 30-60 ms every few seconds: alone a p99 of 15-20 ms at half load. The same
        rule as an install: once the frozen heap grew by ``growth``, everything is collected
        first. Returns whether it froze."""
        if self.full_passes == self._settled_at:
            return False
        self._settled_at = self.full_passes
        self._freeze()
        self.settles += 1
        return True

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2 and not self._collecting:
            self.full_passes += 1

    def _freeze(self) -> None:
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        if self.collected_at == 0 or frozen > self.collected_at * (1 + self.growth):
            start = time.perf_counter()
            self._collecting = True
            try:
                gc.collect()
            finally:
                self._collecting = False
            self.last_pause = time.perf_counter() - start
            self.collections += 1
            gc.freeze()
            self.collected_at = gc.get_freeze_count()
        else:
            gc.freeze()
        self.freezes += 1
