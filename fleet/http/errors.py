"""The HTTP core's exceptions.

FleetError (fleet.errors)
└── HttpError            a request that cannot be served: ``status`` to answer, then close
"""

from __future__ import annotations

from fleet.errors import FleetError


class HttpError(FleetError):
    """Bad input from a client (or a limit it ran into): answer ``status`` with ``reason``.
    ``metric`` is the label it is counted under. The framing after it cannot be trusted, so the
    connection is always closed."""

    def __init__(self, status: int, reason: str, metric: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.metric = metric
