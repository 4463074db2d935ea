"""The simulator's exception tree.

SimError
├── SimConfigError      bad options or settings given to the simulator (the caller's fault)
├── TargetError         the fleet under test could not be reached or started (upstream)
└── HttpProtocolError   a peer answered with bytes that are not HTTP/1.1 (upstream)
"""

from __future__ import annotations


class SimError(Exception):
    """Base of every error raised by sim/."""


class SimConfigError(SimError):
    pass


class TargetError(SimError):
    pass


class HttpProtocolError(SimError):
    pass
