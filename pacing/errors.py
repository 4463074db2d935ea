"""The pacer's exceptions.

PacingError
├── PacerConfigError    bad configuration: the pacer cannot start (one line says why)
└── PacerUpstreamError  Postgres or the buses failed in a way the pacer cannot ride out
"""

from __future__ import annotations


class PacingError(Exception):
    """Base of every error raised by pacing/."""


class PacerConfigError(PacingError):
    pass


class PacerUpstreamError(PacingError):
    pass
