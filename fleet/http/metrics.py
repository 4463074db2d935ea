"""The HTTP core's Prometheus metrics, on the registry passed in.

Counted in plain integers as things happen and added to the Prometheus values once per
event-loop iteration (``fold``, scheduled through ``call_soon`` when something was counted), so
that an attack that makes thousands of refusals a second costs a dictionary update each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

REFUSALS: Final = (
    "bad_request",
    "head_too_large",
    "body_too_large",
    "too_many_chunks",
    "not_implemented",
    "version",
)
TIMEOUTS: Final = ("head", "body", "idle", "write")
CLOSES: Final = ("request_cap", "upgrade", "handler_error")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.open = Gauge(
            "fleet_http_connections",
            "Client connections open",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.rejected = Counter(
            "fleet_http_connections_rejected",
            "Connections closed at accept because the connection cap was reached",
            registry=r,
        )
        self.refused = Counter(
            "fleet_http_refused",
            "Requests refused by the framing (answered 4xx/5xx, connection closed)",
            ["reason"],
            registry=r,
        )
        self.timeouts = Counter(
            "fleet_http_timeouts",
            "Connections closed by a timer: head, body, idle, or answers not read (write)",
            ["phase"],
            registry=r,
        )
        self.closed = Counter(
            "fleet_http_closed",
            "Connections closed by the server after an answer, by reason",
            ["reason"],
            registry=r,
        )
        self._children: dict[tuple[str, str], Any] = {}
        for reason in REFUSALS:
            self._children[("refused", reason)] = self.refused.labels(reason)
        for phase in TIMEOUTS:
            self._children[("timeout", phase)] = self.timeouts.labels(phase)
        for reason in CLOSES:
            self._children[("closed", reason)] = self.closed.labels(reason)
        self._counts: dict[Any, int] = {}
        self._rejected = 0
        self._connections = 0
        self._due = False
        self._schedule: Callable[[Callable[[], None]], object] | None = None

    def fold_each_iteration(self, call_soon: Callable[[Callable[[], None]], object] | None) -> None:
        self._schedule = call_soon

    def count(self, kind: str, label: str) -> None:
        """``kind`` is refused, timeout or closed; unknown labels are counted as the first."""
        child = self._children.get((kind, label))
        if child is None:
            child = self._children[(kind, REFUSALS[0] if kind == "refused" else CLOSES[2])]
        self._counts[child] = self._counts.get(child, 0) + 1
        self._mark()

    def reject(self) -> None:
        self._rejected += 1
        self._mark()

    def connections(self, count: int) -> None:
        self._connections = count
        self._mark()

    def _mark(self) -> None:
        if not self._due and self._schedule is not None:
            self._due = True
            self._schedule(self.fold)

    def fold(self) -> None:
        self._due = False
        counts, self._counts = self._counts, {}
        for child, n in counts.items():
            child.inc(n)
        if self._rejected:
            self.rejected.inc(self._rejected)
            self._rejected = 0
        self.open.set(self._connections)
