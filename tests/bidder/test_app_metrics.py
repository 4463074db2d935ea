"""Metric label sets stay bounded whatever the traffic says; the cache's collector is copied
into ordinary metrics for the multiprocess exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bidder.metrics import MAX_REASONS, BidderMetrics, CollectorMirror, top_campaign_ids
from cache import Cache, CacheSettings, Loaded, Region
from fleet.config import Campaign, ConfigSnapshot


def snapshot(budgets: dict[int, int]) -> ConfigSnapshot:
    return ConfigSnapshot(
        advertisers=(),
        campaigns=tuple(
            Campaign(
                id=cid,
                advertiser_id=1,
                name=f"c{cid}",
                goal_type="CPM",
                goal_price_micros=1,
                max_bid_cpm_micros=1,
                daily_budget_micros=daily,
                total_budget_micros=0,
            )
            for cid, daily in budgets.items()
        ),
        version=3,
    )


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for m in registry.collect() for s in m.samples if s.name == name]


def test_reasons_are_capped_and_sanitised() -> None:
    registry = CollectorRegistry()
    m = BidderMetrics(registry)
    for i in range(MAX_REASONS * 3):
        m.request("nobid", f"reason_{i}", 0.001)
    m.request("nobid", "Bad Label!", 0.001)
    m.request("weird-outcome", "x", 0.001)
    labels = series(registry, "bidder_requests_total")
    reasons = {s["reason"] for s in labels}
    assert len(reasons) <= MAX_REASONS + 1 and "other" in reasons
    assert {s["outcome"] for s in labels} <= {"nobid", "error"}
    total = sum(registry.get_sample_value("bidder_requests_total", s) or 0 for s in labels)
    assert total == MAX_REASONS * 3 + 2  # nothing lost, only folded


def test_campaign_labels_for_the_largest_budgets_only() -> None:
    registry = CollectorRegistry()
    m = BidderMetrics(registry, top_campaigns=2)
    snap = snapshot({1: 10, 2: 300, 3: 200, 4: 300})
    assert top_campaign_ids(snap, 2) == {2, 4}
    m.set_portfolio(snap)
    for cid in (1, 2, 3, 4, 4):
        m.bid(cid, 2_500_000)
    got = {s["campaign"]: registry.get_sample_value("bidder_bids_total", s)
           for s in series(registry, "bidder_bids_total")}  # fmt: skip
    assert got == {"2": 1, "4": 2, "other": 2}
    assert registry.get_sample_value("bidder_bid_price_cpm_sum", {"campaign": "4"}) == 5.0
    assert registry.get_sample_value("bidder_config_version") == 3


async def never_loaded(key: str) -> Loaded[int]:
    raise AssertionError("the cache is not started: nothing is loaded")


def test_the_cache_collector_is_copied_growth_by_growth() -> None:
    source, target = CollectorRegistry(), CollectorRegistry()
    cache = Cache(CacheSettings(), registry=source)
    region: Region[int] = cache.register("config", never_loaded, type=int)
    mirror = CollectorMirror(source, "cache_", registry=target)
    mirror.sync()
    value = target.get_sample_value
    assert value("cache_misses_total", {"tier": "l1", "namespace": "config"}) == 0
    assert region.peek("snapshot") is None  # not started: a miss that fills nothing
    assert region.peek("snapshot") is None
    mirror.sync()
    assert value("cache_misses_total", {"tier": "l1", "namespace": "config"}) == 2
    mirror.sync()  # no growth, nothing added
    assert value("cache_misses_total", {"tier": "l1", "namespace": "config"}) == 2
    assert value("cache_entries", {"namespace": "config"}) == 0
    assert value("cache_l2_up") == 0
    assert value("cache_fill_seconds_count", {"tier": "l3", "namespace": "config"}) is None


def test_folded_observations_match_what_prometheus_would_record() -> None:
    """Counts add up in plain integers and reach the Prometheus values when collected."""
    from prometheus_client import Histogram

    from bidder.metrics import DURATION_BUCKETS

    registry, reference = CollectorRegistry(), CollectorRegistry()
    m = BidderMetrics(registry)
    expected = Histogram("bidder_request_duration_seconds", "", buckets=DURATION_BUCKETS,
                         registry=reference)  # fmt: skip
    durations = [0.0, 0.0005, 0.00051, 0.01, 0.25, 0.3, 7.0, -1.0]  # on, between, past bounds
    for d in durations:
        m.request("nobid", "no_candidates", d, 3)
        expected.observe(d)

    def samples(r: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for metric in r.collect()
            for s in metric.samples
            if s.name.startswith("bidder_request_duration_seconds")
            and not s.name.endswith("_created")
        }

    assert samples(registry) == samples(reference)
    value = registry.get_sample_value
    assert value("bidder_requests_total", {"outcome": "nobid", "reason": "no_candidates"}) == 8
    assert value("bidder_candidates_sum") == 24
    m.error("publish")
    m.events_published(2)
    assert value("bidder_errors_total", {"where": "publish"}) == 1
    assert value("bidder_events_published_total") == 2
