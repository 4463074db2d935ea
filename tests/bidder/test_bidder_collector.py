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
