"""The bidder's Prometheus metrics, registered on the registry passed in.

Label sets are bounded: request outcomes are a fixed set, reasons are the pipeline's own labels
(sanitised, at most ``MAX_REASONS`` distinct, then ``other``), and campaigns get their own label
only for the ``top`` largest daily budgets of the current portfolio (the rest are ``other``).
Children are cached so that a request costs a few dictionary lookups, not label resolution.

Per request nothing touches a Prometheus value (each is a lock, and with several processes a
write to a memory-mapped file): counts and histogram buckets add up in plain integers, and
``fold()`` adds them to the Prometheus values in one go, once per event-loop iteration (the
requests one iteration answered) when ``fold_each_iteration`` is on, and in any case when the
registry is collected. So a scrape misses nothing answered before it, in this process or any
other, except in a process still in the loop iteration that answered. Fold in the loop's
thread, where the counting happens.

With several server processes the values live in ``PROMETHEUS_MULTIPROC_DIR`` (set by the parent
before any metric exists) and ``exposition()`` aggregates every process's files.
"""

from __future__ import annotations

import heapq
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics_core import Metric

from fleet.config import ConfigSnapshot
from fleet.money import MICROS_PER_UNIT

OUTCOMES: Final = ("bid", "nobid", "invalid", "late", "shed", "error")
MAX_REASONS: Final = 64
OTHER: Final = "other"
_REASON_OK = re.compile(r"^[a-z0-9_]{1,40}$")

DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25,
)  # fmt: skip
CANDIDATE_BUCKETS: Final = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
PRICE_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 50.0)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format of every metric: this process's, or all server processes' together."""
    if multiprocess_enabled():
        merged = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry)


class CollectorMirror:
    """Copies what a custom collector reports (the cache's counters, read at scrape time) into
    ordinary metrics, so that the multiprocess exposition, which reads only the values files,
    shows them too. ``sync()`` (periodically, and before a scrape) adds each counter's growth
    since the last sync and sets each gauge; counters sum over processes, gauges use
    ``gauge_modes`` (default ``livesum``). Only families named with ``prefix`` whose type is
    counter or gauge are copied (histograms are ordinary metrics already). The copies register
    on ``registry`` (none in production: the exposition reads the values files)."""

    def __init__(
        self,
        source: CollectorRegistry,
        prefix: str,
        *,
        gauge_modes: dict[str, str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.source = source
        self.registry = registry
        self.prefix = prefix
        self.gauge_modes = gauge_modes or {}
        self._metrics: dict[str, Any] = {}
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}

    def _metric(self, kind: str, name: str, documentation: str, labels: tuple[str, ...]) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            if kind == "counter":
                metric = Counter(name, documentation, labels, registry=self.registry)
            else:
                mode: Any = self.gauge_modes.get(name, "livesum")
                metric = Gauge(
                    name, documentation, labels, registry=self.registry, multiprocess_mode=mode
                )
            self._metrics[name] = metric
        return metric

    def sync(self) -> None:
        for family in self.source.collect():
            if not family.name.startswith(self.prefix) or family.type not in ("counter", "gauge"):
                continue
            for sample in family.samples:
                if family.type == "counter" and not sample.name.endswith("_total"):
                    continue  # _created
                names = tuple(sorted(sample.labels))
                values = tuple(sample.labels[n] for n in names)
                metric = self._metric(family.type, family.name, family.documentation, names)
                child = metric.labels(*values) if names else metric
                if family.type == "gauge":
                    child.set(sample.value)
                    continue
                key = (family.name, values)
                delta = sample.value - self._last.get(key, 0.0)
                self._last[key] = sample.value
                if delta > 0:
                    child.inc(delta)


def top_campaign_ids(snapshot: ConfigSnapshot, top: int) -> frozenset[int]:
    """The ``top`` live campaigns with the largest daily budgets (ties: lower id first); a
    partial selection, not a sort of all (20,000 campaigns)."""
    ranked = heapq.nsmallest(
        top,
        ((-c.daily_budget_micros, c.id) for c in snapshot.campaigns if c.status == "active"),
    )
    return frozenset(cid for _, cid in ranked)


class _Observations:
    """Observations of one histogram child not yet folded into it: bucket counts (found as
    ``Histogram.observe`` finds them: the first upper bound >= the amount) and their sum."""

    __slots__ = ("bounds", "child", "count", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)  # the last is +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount
        self.count += 1

    def fold(self) -> None:
        if not self.count:
            return
        buckets, counts = self.child._buckets, self.counts
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0
        self.count = 0


def _on_collect(fold: Callable[[], None]) -> None:
    """Without a loop to fold after: the next collection of the registry folds."""


class _FoldFirst:
    """Registered before the metrics: collecting the registry folds the pending counts first."""

    def __init__(self, fold: Callable[[], None]) -> None:
        self.fold = fold

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        self.fold()
        return ()


class BidderMetrics:
    """Everything the bidder service records; ``registry`` is required (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry, *, top_campaigns: int = 20) -> None:
        self.registry = registry
        self.top_campaigns = top_campaigns
        r = registry
        r.register(_FoldFirst(self.fold))
        self.requests = Counter(
            "bidder_requests",
            "Bid requests by outcome and reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            "bidder_request_duration_seconds",
            "Arrival to answer written, seconds",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.candidates = Histogram(
            "bidder_candidates",
            "Eligible campaigns per request",
            buckets=CANDIDATE_BUCKETS,
            registry=r,
        )
        self.bids = Counter("bidder_bids", "Bids sent, per campaign", ["campaign"], registry=r)
        self.bid_price = Histogram(
            "bidder_bid_price_cpm",
            "Bid prices, CPM in the bidding currency",
            ["campaign"],
            buckets=PRICE_BUCKETS,
            registry=r,
        )
        self.shed = Counter("bidder_shed", "Requests shed before parsing", ["reason"], registry=r)
        self.errors = Counter(
            "bidder_errors", "Internal errors (answered with a no-bid)", ["where"], registry=r
        )
        self.loop_lag = Gauge(
            "bidder_event_loop_lag_seconds",
            "Last measured event-loop lag",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.shed_share = Gauge(
            "bidder_shed_share",
            "Share of recent requests shed (running average)",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.in_flight = Gauge(
            "bidder_in_flight_requests",
            "Requests being read or answered",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.ready = Gauge(
            "bidder_ready",
            "1 once a config snapshot and a model are loaded",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.snapshot_version = Gauge(
            "bidder_config_version",
            "Version of the config snapshot in use",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.snapshot_loads = Counter(
            "bidder_config_loads", "Config snapshot loads by result", ["result"], registry=r
        )
        self.snapshot_apply = Gauge(
            "bidder_config_apply_seconds",
            "Time the last config snapshot took to reach the bid path (index and scorer "
            "tables), by kind: incremental or full",
            ["kind"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.postgres_up = Gauge(
            "bidder_postgres_up",
            "1 while Postgres answers the bidder's spend reads",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.spend_blocked = Gauge(
            "bidder_budget_blocked_campaigns",
            "Campaigns refused because their recorded spend reached a budget",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.spend_loads = Counter(
            "bidder_spend_loads", "Recorded-spend reads by result", ["result"], registry=r
        )
        self.frequency = Counter(
            "bidder_frequency_lookups",
            "Frequency counter lookups (hit, miss, dropped) and fills (filled, fill_error)",
            ["result"],
            registry=r,
        )
        self.events = Counter(
            "bidder_events_published", "Events handed to the event bus", registry=r
        )
        self._request_children: dict[tuple[str, str], Any] = {}
        self._campaign_children: dict[int, tuple[Any, _Observations]] = {}
        self._price_observations: dict[str, _Observations] = {}
        self._prices_observed: list[_Observations] = []  # those with something to fold
        self._labelled: frozenset[int] = frozenset()
        self._shed_children = {
            reason: self.shed.labels(reason) for reason in ("lag", "in_flight", "draining")
        }
        self._error_children: dict[str, Any] = {}
        # not yet folded: counts per counter child, and the two per-request histograms
        self._counts: dict[Any, int] = {}
        self._durations = _Observations(self.duration)
        self._candidates = _Observations(self.candidates)
        self._events = 0
        self._fold_due = False  # something is counted and not folded yet
        self._schedule: Callable[[Callable[[], None]], object] = _on_collect

    def fold_each_iteration(self, call_soon: Callable[[Callable[[], None]], object] | None) -> None:
        """Fold through ``call_soon`` (the running loop's): after the iteration that counted;
        None: only when collected or told."""
        self._schedule = call_soon or _on_collect

    def _due(self) -> None:
        self._fold_due = True
        self._schedule(self.fold)

    # -- per request ------------------------------------------------------------------------

    def request(self, outcome: str, reason: str, duration: float, candidates: int = 0) -> None:
        child = self._request_children.get((outcome, reason))
        if child is None:
            child = self._request_child(outcome, reason)
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1
        # _Observations.observe, inlined: this runs for every request
        durations = self._durations
        durations.counts[bisect_left(durations.bounds, duration)] += 1
        durations.total += duration
        durations.count += 1
        found = self._candidates
        found.counts[bisect_left(found.bounds, candidates)] += 1
        found.total += candidates
        found.count += 1
        if not self._fold_due:
            self._due()

    def _request_child(self, outcome: str, reason: str) -> Any:
        if outcome not in OUTCOMES:
            outcome = "error"
        known = {r for _, r in self._request_children}
        if not _REASON_OK.match(reason) or (reason not in known and len(known) >= MAX_REASONS):
            reason = OTHER
        child = self.requests.labels(outcome, reason)
        if len(self._request_children) < MAX_REASONS * len(OUTCOMES):
            self._request_children[(outcome, reason)] = child
        return child

    def shed_request(self, reason: str, duration: float) -> None:
        child = self._shed_children.get(reason) or self.shed.labels(OTHER)
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1
        self.request("shed", reason, duration)  # schedules the fold

    def bid(self, campaign_id: int, price_cpm_micros: int) -> None:
        children = self._campaign_children.get(campaign_id)
        if children is None:
            children = self._campaign_child(campaign_id)
        counts = self._counts
        counter, prices = children
        counts[counter] = counts.get(counter, 0) + 1
        if not prices.count:
            self._prices_observed.append(prices)
        prices.observe(price_cpm_micros / MICROS_PER_UNIT)
        if not self._fold_due:
            self._due()

    def _campaign_child(self, campaign_id: int) -> tuple[Any, _Observations]:
        label = str(campaign_id) if campaign_id in self._labelled else OTHER
        prices = self._price_observations.get(label)
        if prices is None:
            prices = _Observations(self.bid_price.labels(label))
            self._price_observations[label] = prices
        children = (self.bids.labels(label), prices)
        self._campaign_children[campaign_id] = children
        return children

    def error(self, where: str) -> None:
        child = self._error_children.get(where)
        if child is None:
            child = self._error_children.setdefault(where, self.errors.labels(where))
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1
        if not self._fold_due:
            self._due()

    def events_published(self, count: int) -> None:
        self._events += count
        if not self._fold_due:
            self._due()

    def fold(self) -> None:
        """Add what was counted since the last fold to the Prometheus values."""
        self._fold_due = False
        counts = self._counts
        if counts:
            self._counts = {}
            for child, n in counts.items():
                child.inc(n)
        self._durations.fold()
        self._candidates.fold()
        if self._prices_observed:
            observed, self._prices_observed = self._prices_observed, []
            for prices in observed:
                prices.fold()
        if self._events:
            events, self._events = self._events, 0
            self.events.inc(events)

    # -- state ------------------------------------------------------------------------------

    def set_portfolio(
        self, snapshot: ConfigSnapshot, labelled: frozenset[int] | None = None
    ) -> None:
        """Choose the campaigns labelled on their own (recomputed per snapshot: series grow only
        when the top set itself changes). ``labelled``: ``top_campaign_ids`` of the snapshot
        when the caller computed it already (off the event loop)."""
        if labelled is None:
            labelled = top_campaign_ids(snapshot, self.top_campaigns)
        self._labelled = labelled
        self._campaign_children.clear()
        self.snapshot_version.set(snapshot.version)
