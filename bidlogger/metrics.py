"""Prometheus metrics of a bid logger, read from the service's plain counters at scrape time
(the per-event path never calls prometheus_client).

    bidlogger_events_total{type}                events folded into the aggregates
    bidlogger_dropped_events_total{cause}       undecodable, bad_timestamp, wrong_partition,
                                                unknown_topic, spool_full, rejected (Postgres
                                                refused the batch's data), internal
    bidlogger_missed_events_total{publisher,cause}  events the bus sequence numbers say were lost:
                                                gap, restart, publisher_restart
    bidlogger_gaps_total{publisher}             sequence gaps seen on the bus, per publisher
    bidlogger_batches_total{outcome}            applied, duplicate (already applied), failed
                                                (retried), rejected (set aside)
    bidlogger_flush_seconds                     time to apply one batch to Postgres (histogram)
    bidlogger_spool_batches / _bytes            batches on disk waiting for Postgres
    bidlogger_spool_age_seconds                 age of the oldest waiting batch (0: none)
    bidlogger_lag_seconds                       wall clock minus the newest event's timestamp
    bidlogger_outbox_files                      Parquet files waiting for the object store
    bidlogger_uploads_total{outcome}            ok, failed
    bidlogger_raw_events_total                  raw-sample events written to segments
    bidlogger_join_bids                         bids held for the impression join
    bidlogger_join_evicted_total{reason}        size (pushed out) or ttl (expired)
    bidlogger_leader                            1 while this logger runs maintenance and the feed
    bidlogger_postgres_up                       1 when the last write or connection succeeded
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

FLUSH_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Snapshot:
    events: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    missed: dict[tuple[str, str], int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    spool_batches: int = 0
    spool_bytes: int = 0
    spool_age: float = 0.0
    lag: float = 0.0
    outbox_files: int = 0
    uploads: dict[str, int] = field(default_factory=dict)
    raw_events: int = 0
    join_bids: int = 0
    join_evicted: dict[str, int] = field(default_factory=dict)
    leader: bool = False
    postgres_up: bool = False


class BidloggerCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()

        def counter(name: str, doc: str, labels: list[str], values: dict) -> Metric:  # type: ignore[type-arg]
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in sorted(values.items()):
                family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
            return family

        def gauge(name: str, doc: str, value: float) -> Metric:
            return GaugeMetricFamily(name, doc, value=value)

        yield counter("bidlogger_events", "Events folded into the aggregates", ["type"], s.events)
        yield counter("bidlogger_dropped_events", "Events dropped, by cause", ["cause"], s.dropped)
        yield counter(
            "bidlogger_missed_events",
            "Events lost before they reached this logger, from the bus sequence numbers",
            ["publisher", "cause"],
            s.missed,
        )
        yield counter("bidlogger_gaps", "Bus sequence gaps, per publisher", ["publisher"], s.gaps)
        yield counter("bidlogger_batches", "Batches by outcome", ["outcome"], s.batches)
        yield counter("bidlogger_uploads", "Parquet uploads by outcome", ["outcome"], s.uploads)
        yield counter(
            "bidlogger_join_evicted", "Bids dropped from the join", ["reason"], s.join_evicted
        )
        raw = CounterMetricFamily("bidlogger_raw_events", "Raw-sample events written")
        raw.add_metric([], s.raw_events)
        yield raw
        yield gauge("bidlogger_spool_batches", "Batches waiting for Postgres", s.spool_batches)
        yield gauge("bidlogger_spool_bytes", "Bytes of batches waiting", s.spool_bytes)
        yield gauge("bidlogger_spool_age_seconds", "Age of the oldest waiting batch", s.spool_age)
        yield gauge("bidlogger_lag_seconds", "Wall clock minus the newest event time", s.lag)
        yield gauge("bidlogger_outbox_files", "Parquet files waiting for upload", s.outbox_files)
        yield gauge("bidlogger_join_bids", "Bids held for the impression join", s.join_bids)
        yield gauge("bidlogger_leader", "1 while this logger runs maintenance", float(s.leader))
        yield gauge("bidlogger_postgres_up", "1 when Postgres takes batches", float(s.postgres_up))


class BidloggerMetrics:
    def __init__(self, registry: CollectorRegistry | None, snapshot: Callable[[], Snapshot]):
        self.flush_seconds = Histogram(
            "bidlogger_flush_seconds",
            "Time to apply one batch to Postgres",
            buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        if registry is not None:
            registry.register(BidloggerCollector(snapshot))
