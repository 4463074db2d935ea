"""The pacer's Prometheus metrics. Per campaign (label ``campaign``): plan, actual (committed),
in flight, budget, throttle; fleet-wide: leases granted and expired, holders,
steps, leadership."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pacing.pacer import Round


class PacerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.leader = Gauge("pacing_leader", "1 while this pacer is the active one", registry=r)
        self.takeovers = Counter(
            "pacing_takeovers_total", "Times this pacer became the active one", registry=r
        )
        self.steps = Counter("pacing_steps_total", "Pacing steps by result", ["result"], registry=r)
        self.step_seconds = Histogram(
            "pacing_step_duration_seconds",
            "One pacing step: reads, plans, controllers, leases, publication",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.plan = Gauge(
            "pacing_plan_micros", "Planned cumulative spend today, now", ["campaign"], registry=r
        )
        self.spend = Gauge(
            "pacing_spend_micros",
            "Committed spend today (campaign_spend) at the last read",
            ["campaign"],
            registry=r,
        )
        self.inflight = Gauge(
            "pacing_inflight_micros",
            "Spend the bidders report in flight, won unbilled or just billed",
            ["campaign"],
            registry=r,
        )
        self.budget = Gauge("pacing_budget_micros", "Today's budget", ["campaign"], registry=r)
        self.throttle = Gauge(
            "pacing_throttle_ratio", "Probability of bidding when allowed", ["campaign"], registry=r
        )
        self.granted = Counter(
            "pacing_leases_granted_total",
            "Spend leases granted (one per holder and campaign)",
            registry=r,
        )
        self.granted_micros = Counter(
            "pacing_granted_micros_total", "Allowance added by lease rounds", registry=r
        )
        self.expired = Counter(
            "pacing_leases_expired_total",
            "Spend leases that ran out unrenewed (their bidder fell silent)",
            registry=r,
        )
        self.holders = Gauge(
            "pacing_holders", "Bidder processes receiving spend leases", registry=r
        )
        self.reports = Counter(
            "pacing_reports_total", "Bidder reports by result", ["result"], registry=r
        )
        self._campaigns: set[str] = set()

    def record(self, rnd: Round) -> None:
        seen: set[str] = set()
        for c in rnd.campaigns:
            label = str(c.campaign_id)
            seen.add(label)
            self.plan.labels(label).set(c.planned)
            self.spend.labels(label).set(c.committed)
            self.inflight.labels(label).set(c.pending)
            self.budget.labels(label).set(c.budget)
            self.throttle.labels(label).set(c.throttle)
            self.granted_micros.inc(max(0, c.granted))
            self.granted.inc(c.leases)
        for label in self._campaigns - seen:  # no longer paced: no stale series
            for gauge in (
                self.plan,
                self.spend,
                self.inflight,
                self.budget,
                self.throttle,
            ):
                gauge.remove(label)
        self._campaigns = seen
        self.expired.inc(rnd.leases_expired)
        self.holders.set(rnd.holders)
