"""The bid path's knobs, declared once: the pipeline's settings and the auction's time limits.

``BidderSettings`` (bidder/settings.py) reads each of them from its ``RTBFLEET_BIDDER_*``
variable and builds these objects; the pipeline computes every answer's deadlines with
``TmaxBounds`` and hands them to the endpoint on the ``Answer``, so that nothing else reads
``tmax`` or knows the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from bidder.filters import DEFAULT_CRAWLER_PATTERNS


@dataclass(frozen=True, slots=True)
class TmaxBounds:
    """How long an auction lasts for us: the request's ``tmax`` (``default_ms`` when it has
    none), at most ``cap_ms``; a bid must leave ``network_allowance_ms`` before that for the
    way back to the exchange."""

    default_ms: int = 100
    cap_ms: int = 250
    network_allowance_ms: int = 15

    def problem(self) -> tuple[str, str] | None:
        """(field, reason) of the first bound that is out of range, else None."""
        if self.default_ms <= 0:
            return "default_ms", "must be greater than 0"
        if self.cap_ms < self.default_ms:
            return "cap_ms", "must be at least the default tmax"
        if not 0 <= self.network_allowance_ms < self.cap_ms:
            return "network_allowance_ms", "must be 0 or more and smaller than the tmax cap"
        return None

    def tmax_ms(self, tmax: int | None) -> int:
        """The request's time limit as we plan on it: its own when positive, capped."""
        return min(tmax if tmax is not None and tmax > 0 else self.default_ms, self.cap_ms)

    def expires(self, arrival: float, tmax: int | None) -> float:
        """When the exchange stops waiting: no answer at all may be sent from then on."""
        return arrival + self.tmax_ms(tmax) / 1000.0

    def deadline(self, arrival: float, tmax: int | None) -> float:
        """When the last bid may leave, the network allowance before ``expires``."""
        return arrival + (self.tmax_ms(tmax) - self.network_allowance_ms) / 1000.0


DEFAULT_TMAX: Final = TmaxBounds()


@dataclass(frozen=True)
class PipelineSettings:
    """Plain knobs of the pure core; the service builds them from ``BidderSettings``, where
    each has its environment variable (tests/test_settings_reach.py walks them)."""

    bidder_id: str = "bidder-0"
    seat: str = ""  # our seat id at the exchanges (checked against deal wseat)
    currency: str = "USD"  # the bidding currency
    tmax: TmaxBounds = field(default=DEFAULT_TMAX)
    margin: float = 0.2  # second price: bid = value * (1 - margin)
    min_bid_cpm_micros: int = 10_000
    vendor_id: int = 0  # our IAB TCF vendor id (GDPR)
    crawler_ua_patterns: tuple[str, ...] = DEFAULT_CRAWLER_PATTERNS
    datacenter_cidrs: tuple[str, ...] = ()
    blocked_publishers: tuple[str, ...] = ()  # publisher ids, site domains or app bundles
    reject_incomplete_schain: bool = False
    tracker_base_url: str = "http://127.0.0.1:8090"
    signing_key: bytes = b""  # required: at least 16 bytes
    # the secret of the user keys (``fleet.signing.user_key``): the tracker's, so that the
    # counters it increments are the ones read here; empty: the signing key
    user_key_secret: bytes = b""
    notice_ttl_s: int = 86400
    nobid_body: bool = False  # False: 204 without a body; True: 200 with {"id", "nbr"}
    use_nurl: bool = False  # adm inline (default) or nurl-only (the tracker serves the markup)
    # A safety net: candidates of an imp priced at most before the internal auction draws
    # among those priced (0: no cap). The race (bidder.race) usually stops long before.
    max_priced_per_imp: int = 64
    # False: price every candidate, the reference the early stop is tested against.
    early_stop: bool = True

    def validate(self) -> None:
        if len(self.signing_key) < 16:
            raise ValueError("signing_key must be at least 16 bytes")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError("margin must be in [0, 1)")
        problem = self.tmax.problem()
        if problem is not None:
            raise ValueError(f"tmax.{problem[0]} {problem[1]}")
        if self.max_priced_per_imp < 0:
            raise ValueError("max_priced_per_imp must be >= 0 (0: no cap)")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError("currency must be an ISO-4217 code such as USD")
