"""The bidder's exception tree.

    BidderError
    ├── BadRequest          the exchange sent something we cannot bid on (bad input, HTTP 400)
    ├── InvalidRequest      a readable request that breaks a rule we cannot bid through (no-bid)
    └── DeadlineExceeded    the auction deadline passed before an answer was ready

A model file that cannot be loaded is the kernel's ``fleet.model.ModelFormatError``.

Only handlers map these to HTTP statuses; ``Pipeline.handle`` never lets one escape.
"""

from __future__ import annotations


class BidderError(Exception):
    """Base of every error raised by bidder/."""


class BadRequest(BidderError):
    """Bad input: ``reason`` is short and names the field path (``imp[1].id: duplicate``)."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRequest(BidderError):
    """A well-formed request that breaks an OpenRTB rule we cannot bid through (duplicate imp
    ids, site and app together, a negative floor). Real exchanges send these as live traffic,
    so the answer is a counted no-bid (nbr 2), not a 400; ``request`` is what was decoded."""

    def __init__(self, reason: str, request: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request


class DeadlineExceeded(BidderError):
    """The answer would be late; the only safe reply is none (or a fast no-bid)."""
