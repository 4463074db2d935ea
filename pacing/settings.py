"""The pacer's settings: ``RTBFLEET_PACER_*`` variables, the cache's (where pacing state is
published) and the fleet-wide ones. Built once with ``PacerServiceSettings.from_env()``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from cache.settings import CacheSettings
from fleet.errors import SettingsError
from fleet.settings import FleetSettings, fraction, load, non_negative, port, positive, setting
from pacing.pacer import PacerSettings

# The session-level advisory lock the pacers compete for ("rtbfpace").
DEFAULT_PACER_LOCK_KEY = 0x72746266_70616365

CONTROLLERS = ("multiplicative", "pi")


def _controller(value: str) -> str | None:
    return None if value in CONTROLLERS else f"must be one of {', '.join(CONTROLLERS)}"


def _at_least_one(value: float) -> str | None:
    return None if value >= 1 else "must be at least 1"


@dataclasses.dataclass(frozen=True)
class PacerServiceSettings:
    interval: float = setting(
        5.0,
        "RTBFLEET_PACER_INTERVAL_SECONDS",
        "seconds between pacing steps (and spend reads)",
        positive,
    )
    lease_ttl: float = setting(
        15.0,
        "RTBFLEET_PACER_LEASE_SECONDS",
        "a spend lease lives this long unless renewed: bidders stop spending when it runs out",
        positive,
    )
    clock_skew: float = setting(
        2.0,
        "RTBFLEET_PACER_CLOCK_SKEW_SECONDS",
        "the most host clocks may differ: a lease counts as live this long past its expiry",
        non_negative,
    )
    holder_ttl: float = setting(
        10.0,
        "RTBFLEET_PACER_HOLDER_TTL_SECONDS",
        "a bidder process not heard from for this long gets no new spend leases",
        positive,
    )
    pending_ttl: float = setting(
        960.0,
        "RTBFLEET_PACER_PENDING_TTL_SECONDS",
        "a silent bidder's in-flight spend and unused allowance count this long (>= win window"
        " + billing window)",
        positive,
    )
    exposure_fraction: float = setting(
        0.01,
        "RTBFLEET_PACER_EXPOSURE_FRACTION",
        "worst-case excess of unresolved bids allowed, as a share of the day's budget (the"
        " overdelivery bound)",
        fraction,
    )
    lead_intervals: float = setting(
        2.0,
        "RTBFLEET_PACER_LEAD_INTERVALS",
        "grants reach the plan's target this many intervals ahead",
        _at_least_one,
    )
    controller: str = setting(
        "multiplicative",
        "RTBFLEET_PACER_CONTROLLER",
        "throttle controller: multiplicative or pi",
        _controller,
    )
    lock_key: int = setting(
        DEFAULT_PACER_LOCK_KEY,
        "RTBFLEET_PACER_LOCK_KEY",
        "Postgres advisory lock key the pacers compete for (one active)",
    )
    retry: float = setting(
        1.0,
        "RTBFLEET_PACER_RETRY_SECONDS",
        "how often a standby pacer tries to take the lead, and a lost one to reconnect",
        positive,
    )
    profile_refresh: float = setting(
        600.0,
        "RTBFLEET_PACER_PROFILE_REFRESH_SECONDS",
        "how often opportunity counts are written and traffic profiles re-read",
        positive,
    )
    metrics_port: int = setting(
        0,
        "RTBFLEET_PACER_METRICS_PORT",
        "Prometheus /metrics port (0: none; 9105 in deploy/)",
        port,
    )
    metrics_host: str = setting(
        "127.0.0.1", "RTBFLEET_PACER_METRICS_HOST", "address of /metrics (0.0.0.0 in a container)"
    )
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)

    @property
    def fleet(self) -> FleetSettings:
        return self.cache.fleet

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> PacerServiceSettings:
        cache = CacheSettings.from_env(environ, env_file)
        return dataclasses.replace(load(cls, environ, env_file), cache=cache)

    def validate(self) -> None:
        if self.lease_ttl < self.interval:
            raise SettingsError(
                "RTBFLEET_PACER_LEASE_SECONDS", "must be at least the interval (leases are renewed)"
            )
        if self.holder_ttl < self.interval:
            raise SettingsError(
                "RTBFLEET_PACER_HOLDER_TTL_SECONDS", "must be at least the interval"
            )

    def core(self, scale: float = 1.0) -> PacerSettings:
        """The pacer's settings in fleet seconds: these variables are real seconds, and a fleet
        clock running ``scale`` times faster (a simulation) sees ``scale`` times as many."""
        return PacerSettings(
            interval=self.interval * scale,
            lease_ttl=self.lease_ttl * scale,
            clock_skew=self.clock_skew * scale,
            holder_ttl=self.holder_ttl * scale,
            pending_ttl=self.pending_ttl * scale,
            exposure_fraction=self.exposure_fraction,
            lead_intervals=self.lead_intervals,
        )
