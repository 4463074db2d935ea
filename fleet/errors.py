"""The kernel's exception tree.

FleetError
├── SettingsError        bad configuration: one line naming the variable and the reason
├── ConfigValidationError a campaign file or row that cannot be accepted (bad input)
├── DatabaseError        Postgres could not be started, reached or migrated (upstream)
└── BusError             a ZMQ endpoint could not be bound or connected (upstream)
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error raised by fleet/."""


class SettingsError(FleetError):
    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class ConfigValidationError(FleetError):
    """Bad input: ``problems`` holds one ``(location, message)`` per error found."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in problems))


class DatabaseError(FleetError):
    pass


class BusError(FleetError):
    pass
