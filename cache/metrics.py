"""Prometheus metrics of the cache. Counters are plain ints kept by the tiers (a hit cannot afford
a prometheus call) and exported by a collector at scrape time; fill latency is a histogram.

    cache_hits_total{tier,namespace}          l1 hits; l2 records used; l3 loads that succeeded
    cache_misses_total{tier,namespace}        l1 misses (a fill is scheduled); l2 misses
    cache_load_errors_total{namespace}        l3 loads that raised or timed out
    cache_fill_seconds{tier,namespace}        fill time from l2, l3, or a lease holder (bus)
    cache_invalidations_total{namespace,source}  invalidations applied (source: bus, local)
    cache_flushes_total{namespace,reason}     whole-namespace drops (gap, silent, version)
    cache_bus_gaps_total                      sequence gaps on the coherence bus
    cache_bus_silent_publishers_total         coherence publishers that went silent
    cache_bus_messages_total{direction,op}    coherence messages sent and received
    cache_lease_contention_total{namespace}   fills that found another process holding the lease
    cache_fills_refused_total{namespace}      values refused as older than what was known
    cache_fills_shed_total{namespace}         misses not filled: too many fills in progress
    cache_evictions_total{namespace,reason}   capacity (CLOCK) or expired
    cache_entries{namespace}                  values in L1
    cache_l2_up                               1 when every memcached server answers
    cache_l2_errors_total                     failed memcached calls
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

FILL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class NamespaceCounts:
    """One namespace's counters beyond those its L1 store keeps."""

    l2_hits: int = 0
    l2_misses: int = 0
    l3_loads: int = 0
    load_errors: int = 0
    shed: int = 0
    lease_contention: int = 0
    invalidations_bus: int = 0
    invalidations_local: int = 0
    flush_gap: int = 0
    flush_silent: int = 0
    flush_version: int = 0


@dataclass
class BusCounts:
    gaps: int = 0
    silent: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NamespaceView:
    """What the collector reads for one namespace."""

    name: str
    counts: NamespaceCounts
    l1_hits: int
    l1_misses: int
    refused: int
    evictions: int
    expirations: int
    entries: int


class CacheMetrics:
    """Owns the histogram and a collector over the counters; ``registry=None`` registers nothing."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        namespaces: Callable[[], list[NamespaceView]],
        l2_state: Callable[[], tuple[bool, int] | None],
    ) -> None:
        self.bus = BusCounts()
        self.fill_seconds = Histogram(
            "cache_fill_seconds",
            "Time to fill a key, by the tier that supplied it",
            ["tier", "namespace"],
            buckets=FILL_BUCKETS,
            registry=registry,
        )
        self._collector = _Collector(namespaces, l2_state, self.bus)
        if registry is not None:
            registry.register(self._collector)

    def observe_fill(self, tier: str, namespace: str, seconds: float) -> None:
        self.fill_seconds.labels(tier, namespace).observe(seconds)


class _Collector(Collector):
    def __init__(
        self,
        namespaces: Callable[[], list[NamespaceView]],
        l2_state: Callable[[], tuple[bool, int] | None],
        bus: BusCounts,
    ) -> None:
        self._namespaces = namespaces
        self._l2_state = l2_state
        self._bus = bus

    def describe(self) -> list[Metric]:
        return []  # collected lazily: the namespaces are registered after the collector

    def collect(self) -> Iterator[Metric]:
        views = self._namespaces()
        hits = CounterMetricFamily(
            "cache_hits", "Values served, by tier", labels=["tier", "namespace"]
        )
        misses = CounterMetricFamily(
            "cache_misses", "Lookups that found nothing, by tier", labels=["tier", "namespace"]
        )
        errors = CounterMetricFamily(
            "cache_load_errors", "L3 loads that raised or timed out", labels=["namespace"]
        )
        invalidations = CounterMetricFamily(
            "cache_invalidations", "Invalidations applied", labels=["namespace", "source"]
        )
        flushes = CounterMetricFamily(
            "cache_flushes", "Whole-namespace drops", labels=["namespace", "reason"]
        )
        contention = CounterMetricFamily(
            "cache_lease_contention", "Fills that found the lease held", labels=["namespace"]
        )
        refused = CounterMetricFamily(
            "cache_fills_refused", "Values refused as older than known", labels=["namespace"]
        )
        shed = CounterMetricFamily(
            "cache_fills_shed", "Misses not filled (too many in flight)", labels=["namespace"]
        )
        evictions = CounterMetricFamily(
            "cache_evictions", "L1 values removed", labels=["namespace", "reason"]
        )
        entries = GaugeMetricFamily("cache_entries", "Values in L1", labels=["namespace"])
        for v in views:
            c = v.counts
            ns = v.name
            hits.add_metric(["l1", ns], v.l1_hits)
            hits.add_metric(["l2", ns], c.l2_hits)
            hits.add_metric(["l3", ns], c.l3_loads)
            misses.add_metric(["l1", ns], v.l1_misses)
            misses.add_metric(["l2", ns], c.l2_misses)
            errors.add_metric([ns], c.load_errors)
            invalidations.add_metric([ns, "bus"], c.invalidations_bus)
            invalidations.add_metric([ns, "local"], c.invalidations_local)
            flushes.add_metric([ns, "gap"], c.flush_gap)
            flushes.add_metric([ns, "silent"], c.flush_silent)
            flushes.add_metric([ns, "version"], c.flush_version)
            contention.add_metric([ns], c.lease_contention)
            refused.add_metric([ns], v.refused)
            shed.add_metric([ns], c.shed)
            evictions.add_metric([ns, "capacity"], v.evictions)
            evictions.add_metric([ns, "expired"], v.expirations)
            entries.add_metric([ns], v.entries)
        yield from (hits, misses, errors, invalidations, flushes, contention, refused, shed)
        yield from (evictions, entries)
        gaps = CounterMetricFamily("cache_bus_gaps", "Sequence gaps on the coherence bus")
        gaps.add_metric([], self._bus.gaps)
        silent = CounterMetricFamily(
            "cache_bus_silent_publishers", "Coherence publishers that went silent"
        )
        silent.add_metric([], self._bus.silent)
        messages = CounterMetricFamily(
            "cache_bus_messages", "Coherence messages", labels=["direction", "op"]
        )
        for op, n in sorted(self._bus.sent.items()):
            messages.add_metric(["sent", op], n)
        for op, n in sorted(self._bus.received.items()):
            messages.add_metric(["received", op], n)
        yield from (gaps, silent, messages)
        state = self._l2_state()
        up = GaugeMetricFamily("cache_l2_up", "1 when every memcached server answers")
        l2_errors = CounterMetricFamily("cache_l2_errors", "Failed memcached calls")
        up.add_metric([], 1.0 if state is not None and state[0] else 0.0)
        l2_errors.add_metric([], state[1] if state is not None else 0)
        yield from (up, l2_errors)
