"""The tracker's exception tree.

TrackerError
├── Refused        a notice or postback that cannot be accepted (bad input): ``status`` is the
│                  HTTP answer (403 for a signature, expiry or path problem, 400 otherwise),
│                  ``cause`` the bounded label it is counted under, ``reason`` for people
├── Unavailable    Postgres (or what a notice needs from it) cannot be reached now: the notice
│                  is answered 503 so that the sender retries; nothing of it was counted
└── KinesisError   a Kinesis spool that cannot be opened or written (upstream or disk)
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error raised by tracker/."""


class Refused(TrackerError):
    def __init__(self, cause: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason
        self.status = status


class Unavailable(TrackerError):
    """Retry later: nothing of the notice was counted."""


class KinesisError(TrackerError):
    pass
