"""The bidder's Prometheus metrics, registered on the registry passed in.

Label sets are bounded: request outcomes are a fixed set, reasons are the pipeline's own labels
(sanitised, at most ``MAX_REASONS`` distinct, then ``other``), and campaigns get their own label
only for the ``top`` largest daily budgets of the current portfolio (the rest are ``other``).
Children are cached so that a request costs a few dictionary lookups, not label resolution.

With several server processes the values live in ``PROMETHEUS_MULTIPROC_DIR`` (set by the parent
before any metric exists) and ``exposition()`` aggregates every process's files.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

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
    """The ``top`` live campaigns with the largest daily budgets (ties: lower id first)."""
    ranked = sorted(
        (c for c in snapshot.campaigns if c.status == "active"),
        key=lambda c: (-c.daily_budget_micros, c.id),
    )
    return frozenset(c.id for c in ranked[:top])


class BidderMetrics:
    """Everything the bidder service records; ``registry`` is required (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry, *, top_campaigns: int = 20) -> None:
        self.registry = registry
        self.top_campaigns = top_campaigns
        r = registry
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
        self._campaign_children: dict[int, tuple[Any, Any]] = {}
        self._labelled: frozenset[int] = frozenset()
        self._shed_children = {
            reason: self.shed.labels(reason) for reason in ("lag", "in_flight", "draining")
        }
        self._error_children: dict[str, Any] = {}

    # -- per request ------------------------------------------------------------------------

    def request(self, outcome: str, reason: str, duration: float, candidates: int = 0) -> None:
        key = (outcome, reason)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_child(outcome, reason)
        child.inc()
        self.duration.observe(duration)
        self.candidates.observe(candidates)

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
        child.inc()
        self.request("shed", reason, duration)

    def bid(self, campaign_id: int, price_cpm_micros: int) -> None:
        children = self._campaign_children.get(campaign_id)
        if children is None:
            label = str(campaign_id) if campaign_id in self._labelled else OTHER
            children = (self.bids.labels(label), self.bid_price.labels(label))
            self._campaign_children[campaign_id] = children
        children[0].inc()
        children[1].observe(price_cpm_micros / MICROS_PER_UNIT)

    def error(self, where: str) -> None:
        child = self._error_children.get(where)
        if child is None:
            child = self._error_children.setdefault(where, self.errors.labels(where))
        child.inc()

    # -- state ------------------------------------------------------------------------------

    def set_portfolio(self, snapshot: ConfigSnapshot) -> None:
        """Choose the campaigns labelled on their own (recomputed per snapshot: series grow only
        when the top set itself changes)."""
        self._labelled = top_campaign_ids(snapshot, self.top_campaigns)
        self._campaign_children.clear()
        self.snapshot_version.set(snapshot.version)
