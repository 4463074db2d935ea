"""The tracker's Prometheus metrics, on a registry passed in (a fresh one per test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TrackerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notices = Counter(
            "tracker_notices_total",
            "Notices by kind and outcome (counted, duplicate, refused, unavailable)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "tracker_refusals_total",
            "Refused notices and postbacks by cause",
            ["cause"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tracker_duplicates_total",
            "Notices and postbacks already counted (answered, not counted again)",
            ["kind"],
            registry=registry,
        )
        self.price_missing = Counter(
            "tracker_price_missing_total",
            "Notices whose ${AUCTION_PRICE} was empty or unsubstituted (no money moved)",
            ["kind"],
            registry=registry,
        )
        self.attributions = Counter(
            "tracker_attributions_total",
            "Postbacks by event (install, inapp) and outcome (click_id, last_click, organic, "
            "duplicate)",
            ["event", "outcome"],
            registry=registry,
        )
        self.spend = Counter(
            "tracker_spend_micros_total",
            "Spend added to campaign_spend, micros of each campaign's currency",
            ["currency"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "tracker_batch_notices",
            "Notices per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tracker_batch_seconds",
            "Time of one group commit",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=registry,
        )
        self.batch_errors = Counter(
            "tracker_batch_errors_total",
            "Group commits that failed (their notices answered 503), by reason",
            ["reason"],
            registry=registry,
        )
        self.frequency = Counter(
            "tracker_frequency_increments_total",
            "Frequency counter increments by outcome (done, no_user_key, failed, dropped)",
            ["outcome"],
            registry=registry,
        )
        self.kinesis_batches = Counter(
            "tracker_kinesis_batches_total",
            "put_records calls by stream and outcome (ok, partial, failed)",
            ["stream", "outcome"],
            registry=registry,
        )
        self.kinesis_records = Counter(
            "tracker_kinesis_records_total",
            "Records delivered to Kinesis by stream",
            ["stream"],
            registry=registry,
        )
        self.kinesis_retries = Counter(
            "tracker_kinesis_retries_total",
            "Records sent again after a failure",
            registry=registry,
        )
        self.kinesis_dropped = Counter(
            "tracker_kinesis_dropped_total",
            "Records dropped because the spool was full",
            registry=registry,
        )
        self.spool_records = Gauge(
            "tracker_kinesis_spool_records",
            "Records waiting in the spool for Kinesis",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "tracker_kinesis_spool_bytes",
            "Bytes of the spool on disk",
            registry=registry,
        )
        self.pauses = Counter(
            "tracker_pauses_total",
            "Campaigns and creatives paused by the cost-per-activation rule",
            ["level"],
            registry=registry,
        )
        self.catalog_age = Gauge(
            "tracker_catalog_age_seconds",
            "Age of the campaign catalog the tracker reads",
            registry=registry,
        )
