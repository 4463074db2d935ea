"""The learner's Prometheus metrics. The core returns numbers; ``LearnerMetrics.record`` turns
them into metrics (the service or the offline trainer calls it after each round)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from learner.grid import Selection
from learner.join import JoinStats


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.examples = Counter(
            "learner_examples_total", "examples learnt", ["head"], registry=registry
        )
        self.throughput = Gauge(
            "learner_examples_per_second",
            "examples learnt per second over the last round",
            registry=registry,
        )
        self.log_loss = Gauge(
            "learner_progressive_log_loss",
            "progressive log loss over the validation window",
            ["head", "estimator"],
            registry=registry,
        )
        self.entropy = Gauge(
            "learner_normalised_entropy_ratio",
            "progressive log loss over the base rate's entropy (below 1 beats a constant)",
            ["head", "estimator"],
            registry=registry,
        )
        self.calibration = Gauge(
            "learner_calibration_ratio",
            "sum of predictions over sum of labels in the window",
            ["head", "estimator"],
            registry=registry,
        )
        self.chosen = Gauge(
            "learner_chosen_estimator",
            "index of the exported estimator",
            ["head"],
            registry=registry,
        )
        self.switches = Counter(
            "learner_estimator_switches_total",
            "changes of the chosen estimator",
            ["head"],
            registry=registry,
        )
        self.model_version = Gauge(
            "learner_model_version", "version of the last exported model", registry=registry
        )
        self.model_bytes = Gauge(
            "learner_model_bytes", "size of the last exported model", registry=registry
        )
        self.model_weights = Gauge(
            "learner_model_nonzero_weights",
            "non-zero weights in the last exported model",
            registry=registry,
        )
        self.state_bytes = Gauge(
            "learner_state_bytes", "memory of every estimator's state", registry=registry
        )
        self.label_delay = Histogram(
            "learner_label_delay_seconds",
            "from an impression (click) to its click (install)",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=registry,
        )
        self.join_events = Counter(
            "learner_join_events_total",
            "events the join could not use, by reason",
            ["reason"],
            registry=registry,
        )
        self.waiting = Gauge(
            "learner_waiting_examples", "examples waiting for their label", registry=registry
        )
        self.segments = Gauge(
            "learner_market_segments", "market segments with evidence", registry=registry
        )
        self._join_seen: dict[str, int] = {}

    def record_round(
        self,
        learnt: Mapping[str, int],
        seconds: float,
        label_delays: Iterable[float],
        join: JoinStats,
        waiting: int,
        state_bytes: int,
        segments: int,
    ) -> None:
        total = 0
        for head, n in learnt.items():
            self.examples.labels(head=head).inc(n)
            total += n
        if seconds > 0:
            self.throughput.set(total / seconds)
        for d in label_delays:
            self.label_delay.observe(d)
        for reason, value in (
            ("unjoined", join.unjoined),
            ("late_label", join.late_labels),
            ("duplicate", join.duplicates),
            ("evicted", join.evicted),
        ):
            seen = self._join_seen.get(reason, 0)
            if value > seen:
                self.join_events.labels(reason=reason).inc(value - seen)
            self._join_seen[reason] = value
        self.waiting.set(waiting)
        self.state_bytes.set(state_bytes)
        self.segments.set(segments)

    def record_selection(self, head: str, selection: Selection) -> None:
        for r in selection.reports:
            labels = {"head": head, "estimator": str(r.index)}
            self.log_loss.labels(**labels).set(r.log_loss.value)
            self.entropy.labels(**labels).set(r.normalised_entropy.value)
            self.calibration.labels(**labels).set(r.calibration.value)
        self.chosen.labels(head=head).set(selection.chosen)
        if selection.changed:
            self.switches.labels(head=head).inc()

    def record_model(self, version: int, size: int, nonzero: int) -> None:
        self.model_version.set(version)
        self.model_bytes.set(size)
        self.model_weights.set(nonzero)
