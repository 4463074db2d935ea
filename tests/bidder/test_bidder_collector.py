"""The collector's policy: the heap frozen after an install, a replaced snapshot's cyclic
garbage collected once the frozen heap has grown by the allowed share."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bidder.collector import LongLived


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a, weakref.ref(b)


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # give the test process's heap back to the collector


def test_first_install_collects_then_freezes(thawed: None) -> None:
    garbage, alive = _cycle()
    del garbage
    long_lived = LongLived()
    long_lived.installed()
    assert alive() is None  # start-up's cyclic garbage went before the freeze
    assert long_lived.collections == 1
    assert gc.get_freeze_count() > 0


def test_frozen_cycle_held_until_growth_then_collected(thawed: None) -> None:
    long_lived = LongLived(growth=10.0)  # no collection on the next installs
    long_lived.installed()
    cycle, alive = _cycle()
    long_lived.installed()  # the cycle, still referenced, is frozen with the rest
    assert long_lived.collections == 1
    del cycle
    gc.collect()
    assert alive() is not None  # the trade-off: frozen cyclic garbage is not collected
    long_lived.growth = 0.0  # the heap grew (by the cycle, at least): the next install collects
    long_lived.installed()
    assert long_lived.collections == 2
    assert alive() is None
    assert gc.get_freeze_count() > 0


def test_acyclic_frozen_objects_still_freed_by_reference_count(thawed: None) -> None:
    long_lived = LongLived(growth=10.0)
    long_lived.installed()
    snapshot = _Node()
    alive = weakref.ref(snapshot)
    long_lived.installed()
    del snapshot
    assert alive() is None


def test_settle_freezes_what_survived_a_full_pass_only_after_one(thawed: None) -> None:
    long_lived = LongLived(growth=10.0)
    long_lived.installed()
    long_lived.watch()
    try:
        assert not long_lived.settle()  # no full pass yet: nothing to do
        survivor = [_Node() for _ in range(100)]
        before = gc.get_freeze_count()
        gc.collect()  # the collector's full pass (as if it ran on its own)
        assert long_lived.settle()
        assert gc.get_freeze_count() >= before + len(survivor)
        assert long_lived.settles == 1 and long_lived.collections == 1  # froze, no collection
        assert not long_lived.settle()  # once per pass
    finally:
        long_lived.unwatch()
    assert long_lived._on_collection not in gc.callbacks


def test_settle_collects_frozen_cyclic_garbage_once_the_heap_grew(thawed: None) -> None:
    long_lived = LongLived(growth=10.0)
    long_lived.installed()
    long_lived.watch()
    try:
        cycle, alive = _cycle()
        gc.collect()
        long_lived.settle()  # the cycle, still referenced, is frozen
        del cycle
        gc.collect()
        assert alive() is not None
        long_lived.growth = 0.0  # the frozen heap grew: the next settle collects everything
        gc.collect()
        assert long_lived.settle()
        assert alive() is None
        assert long_lived.collections == 2
        # the settle's own collection is not a pass of the collector's to settle again
        assert not long_lived.settle()
    finally:
        long_lived.unwatch()
