"""L1Store: versions, floors, ttl / stale bounds, CLOCK eviction. Plain data, no clock."""

from __future__ import annotations

import pytest

from cache.store import L1Store, Offer, Policy


def make(
    ttl: float = 10.0, max_stale: float = 5.0, max_entries: int = 100, hot: tuple[str, ...] = ()
) -> tuple[L1Store[str], list[str]]:
    missed: list[str] = []
    store: L1Store[str] = L1Store(
        Policy(ttl=ttl, max_stale=max_stale, max_entries=max_entries, refresh_retry=1.0),
        hot,
        on_miss=missed.append,
    )
    return store, missed


def test_peek_hit_and_miss_counts_and_reports_miss() -> None:
    store, missed = make()
    assert store.peek("a") is None
    assert missed == ["a"]
    assert store.offer("a", "A", 1, now=0.0) is Offer.STORED
    assert store.peek("a") == "A"
    assert (store.hits, store.misses) == (1, 1)
    assert missed == ["a"]


def test_none_is_a_cached_value_not_a_miss() -> None:
    store, missed = make()
    store.offer("ghost", None, 1, now=0.0)  # type: ignore[arg-type]
    assert store.peek("ghost") is None
    assert missed == [] and store.hits == 1


def test_older_version_never_replaces_newer() -> None:
    store, _ = make()
    store.offer("a", "v5", 5, now=0.0)
    assert store.offer("a", "v4", 4, now=1.0) is Offer.NOT_NEWER
    assert store.peek("a") == "v5"
    assert store.offer("a", "v6", 6, now=1.0) is Offer.STORED
    assert store.peek("a") == "v6"


def test_same_version_only_extends_when_fresher() -> None:
    store, _ = make(ttl=10)
    store.offer("a", "x", 3, now=0.0)
    assert store.offer("a", "x", 3, now=0.0, age=2.0) is Offer.SAME
    assert store.offer("a", "x", 3, now=5.0) is Offer.STORED
    assert store.entries["a"].fresh_until == 15.0


def test_invalidation_drops_older_and_refuses_late_stale_fill() -> None:
    store, _ = make()
    store.offer("a", "old", 3, now=0.0)
    store.peek("a")
    result = store.invalidate("a", 7, now=1.0)
    assert result.applied and result.removed and result.hot
    assert store.peek("a") is None
    # A fill of a value loaded before the invalidation arrives late: refused.
    assert store.offer("a", "old", 3, now=1.1) is Offer.OLDER_THAN_FLOOR
    assert store.offer("a", "old", 6, now=1.1) is Offer.OLDER_THAN_FLOOR
    assert store.peek("a") is None
    # A value loaded after it (stamped with at least its version) is taken.
    assert store.offer("a", "new", 7, now=1.2) is Offer.STORED
    assert store.peek("a") == "new"


def test_invalidation_older_than_value_is_ignored() -> None:
    store, _ = make()
    store.offer("a", "v9", 9, now=0.0)
    result = store.invalidate("a", 8, now=1.0)
    assert not result.applied and not result.removed
    assert store.peek("a") == "v9"


def test_invalidation_of_unheld_key_still_sets_floor() -> None:
    store, _ = make()
    result = store.invalidate("b", 4, now=0.0)
    assert result.applied and not result.removed
    assert store.floor("b") == 4
    assert store.offer("b", "x", 3, now=0.1) is Offer.OLDER_THAN_FLOOR


def test_namespace_flush_with_version_raises_every_floor() -> None:
    store, _ = make()
    store.offer("a", "a", 3, now=0.0)
    store.offer("b", "b", 12, now=0.0)
    store.peek("a")
    hot = store.invalidate_all(10)
    assert hot == ["a"]
    assert "a" not in store and store.peek("b") == "b"
    assert store.floor("zzz") == 10
    assert store.offer("c", "c", 9, now=0.1) is Offer.OLDER_THAN_FLOOR
    assert store.offer("c", "c", 10, now=0.1) is Offer.STORED


def test_flush_without_version_drops_everything_keeps_floors() -> None:
    store, _ = make()
    store.invalidate("a", 5, now=0.0)
    store.offer("b", "b", 1, now=0.0)
    store.invalidate_all(None)
    assert len(store) == 0
    assert store.floor("a") == 5


def test_fresh_then_stale_refresh_then_removed_at_bound() -> None:
    store, _ = make(ttl=10, max_stale=5)
    store.offer("a", "A", 1, now=0.0)
    assert store.sweep(9.9) == []
    store.peek("a")  # in use
    assert store.sweep(10.0) == ["a"]  # stale: refresh, keep serving
    assert store.peek("a") == "A"
    # Refresh keeps failing: retried every refresh_retry while in use...
    assert store.sweep(11.0) == ["a"]
    store.peek("a")
    assert store.sweep(12.0) == ["a"]
    store.peek("a")
    # ...but never served past ttl + max_stale.
    store.sweep(15.0)
    assert "a" not in store
    assert store.expirations == 1


def test_stale_and_unused_is_removed_not_refreshed() -> None:
    store, _ = make(ttl=10, max_stale=5)
    store.offer("a", "A", 1, now=0.0)
    assert store.sweep(10.5) == []
    assert "a" not in store


def test_successful_refresh_reschedules() -> None:
    store, _ = make(ttl=10, max_stale=5)
    store.offer("a", "A", 1, now=0.0)
    store.peek("a")
    assert store.sweep(10.0) == ["a"]
    assert store.offer("a", "A2", 2, now=10.1) is Offer.STORED
    assert store.sweep(14.0) == []
    assert store.sweep(19.0) == []
    assert store.peek("a") == "A2"


def test_hot_keys_always_refresh_and_are_not_evicted() -> None:
    store, _ = make(ttl=10, max_stale=5, max_entries=2, hot=("snapshot",))
    store.offer("snapshot", "S", 1, now=0.0)
    assert store.sweep(10.0) == ["snapshot"]  # refreshed though nobody read it
    store.offer("snapshot", "S", 1, now=10.0)
    for i in range(10):
        store.offer(f"k{i}", "v", 1, now=10.0)
    assert "snapshot" in store
    assert len(store) == 2


def test_old_age_shortens_freshness_and_too_old_is_refused() -> None:
    store, _ = make(ttl=10)
    assert store.offer("a", "A", 1, now=100.0, age=8.0) is Offer.STORED
    assert store.entries["a"].fresh_until == pytest.approx(102.0)
    assert store.offer("b", "B", 1, now=100.0, age=10.0) is Offer.TOO_OLD


def test_clock_eviction_keeps_recently_read() -> None:
    store, _ = make(max_entries=3)
    for k in ("a", "b", "c"):
        store.offer(k, k, 1, now=0.0)
    store.peek("a")
    store.offer("d", "d", 1, now=0.0)  # evicts b (a was read: second chance)
    assert set(store.entries) == {"a", "c", "d"}
    assert store.evictions == 1
    store.offer("e", "e", 1, now=0.0)  # a's flag was cleared by the hand: c goes
    assert set(store.entries) == {"a", "d", "e"}


def test_bounded_under_churn_and_floors_bounded() -> None:
    store, _ = make(max_entries=50)
    for i in range(1000):
        store.offer(f"k{i}", "v", 1, now=float(i) * 0.001)
        store.invalidate(f"x{i}", 2, now=0.0)
        if i % 3 == 0:
            store.peek(f"k{i}")
    assert len(store) == 50
    assert len(store._floors) <= 50
    assert len(store._due) <= 4 * 50 + 1024


def test_floors_expire_after_retention() -> None:
    store: L1Store[str] = L1Store(Policy(ttl=1, max_stale=0, max_entries=10, floor_retention=5))
    store.invalidate("a", 9, now=0.0)
    store.sweep(4.9)
    assert store.floor("a") == 9
    store.sweep(5.1)
    assert store.floor("a") == 0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Policy(ttl=0, max_stale=1, max_entries=1)
    with pytest.raises(ValueError):
        Policy(ttl=1, max_stale=1, max_entries=0)
