"""The cache's settings: ``RTBFLEET_CACHE_*`` variables plus the fleet-wide ones.

Built once at start-up with ``CacheSettings.from_env()`` and passed down explicitly. The fleet
settings say where memcached (L2), Postgres (L3 and the watcher) and the coherence bus are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from fleet.errors import SettingsError
from fleet.settings import FleetSettings, load, non_negative, positive, setting

# The session-level advisory lock the config watchers compete for ("rtbfcwat").
DEFAULT_WATCHER_LOCK_KEY = 0x72746266_63776174


def _l2_prefix(value: str) -> str | None:
    ok = 0 < len(value) <= 32 and value.isascii() and all(c.isalnum() or c in "-_." for c in value)
    return None if ok else "must be 1-32 characters of letters, digits, '-', '_' or '.'"


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """Tier sizes, lifetimes and timeouts. Namespaces may override ttl, max_stale and size."""

    l1_max_entries: int = setting(
        100_000, "RTBFLEET_CACHE_L1_MAX_ENTRIES", "L1 entries per namespace (default)", positive
    )
    default_ttl: float = setting(
        30.0,
        "RTBFLEET_CACHE_TTL_SECONDS",
        "how long a value is fresh (default per namespace); then it is refreshed",
        positive,
    )
    max_stale: float = setting(
        300.0,
        "RTBFLEET_CACHE_MAX_STALE_SECONDS",
        "how long past its ttl a value is still served while refreshes fail (L3 down)",
        non_negative,
    )
    lease_seconds: int = setting(
        5,
        "RTBFLEET_CACHE_LEASE_SECONDS",
        "fleet-wide single-flight lease in memcached: one L3 load per key per lease",
        positive,
    )
    l2_pool_size: int = setting(
        4, "RTBFLEET_CACHE_L2_POOL_SIZE", "threads (and connections) for memcached calls", positive
    )
    l2_timeout: float = setting(
        0.5, "RTBFLEET_CACHE_L2_TIMEOUT_SECONDS", "memcached connect and call timeout", positive
    )
    l2_retry: float = setting(
        1.0,
        "RTBFLEET_CACHE_L2_RETRY_SECONDS",
        "while memcached is down, how often it is probed",
        positive,
    )
    l2_prefix: str = setting(
        "rtbf1", "RTBFLEET_CACHE_L2_PREFIX", "prefix of every memcached key", _l2_prefix
    )
    l2_value_max_bytes: int = setting(
        1_000_000,
        "RTBFLEET_CACHE_L2_VALUE_MAX_BYTES",
        "larger records are not stored in memcached (its item size limit)",
        positive,
    )
    bus_value_max_bytes: int = setting(
        256_000,
        "RTBFLEET_CACHE_BUS_VALUE_MAX_BYTES",
        "fills larger than this are announced on the bus without their value",
        non_negative,
    )
    compress_min_bytes: int = setting(
        16_384,
        "RTBFLEET_CACHE_COMPRESS_MIN_BYTES",
        "values at least this large are zlib-compressed for L2 and the bus",
        positive,
    )
    tick: float = setting(
        0.05,
        "RTBFLEET_CACHE_TICK_SECONDS",
        "resolution of the coarse clock that expires and refreshes L1 entries",
        positive,
    )
    load_timeout: float = setting(
        5.0, "RTBFLEET_CACHE_LOAD_TIMEOUT_SECONDS", "limit on one L3 load", positive
    )
    refresh_retry: float = setting(
        1.0,
        "RTBFLEET_CACHE_REFRESH_RETRY_SECONDS",
        "after a failed refresh of a stale value, wait this long before the next try",
        positive,
    )
    max_inflight: int = setting(
        1024,
        "RTBFLEET_CACHE_MAX_INFLIGHT_FILLS",
        "fills in progress per namespace; misses past it are not filled (counted as shed)",
        positive,
    )
    bus: bool = setting(True, "RTBFLEET_CACHE_BUS", "join the coherence bus (off: TTLs only)")
    heartbeat_timeout: float = setting(
        3.0,
        "RTBFLEET_CACHE_HEARTBEAT_TIMEOUT_SECONDS",
        "a coherence publisher silent this long is presumed lost: what it published is flushed",
        positive,
    )
    watcher_retry: float = setting(
        1.0,
        "RTBFLEET_CACHE_WATCHER_RETRY_SECONDS",
        "how often a standby watcher tries to take the lead, and a lost one to reconnect",
        positive,
    )
    watcher_lock_key: int = setting(
        DEFAULT_WATCHER_LOCK_KEY,
        "RTBFLEET_CACHE_WATCHER_LOCK_KEY",
        "Postgres advisory lock key the config watchers compete for",
    )
    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> CacheSettings:
        """Both the cache's and the fleet's settings; raises SettingsError on a bad value."""
        fleet = load(FleetSettings, environ, env_file)
        return dataclasses.replace(load(cls, environ, env_file), fleet=fleet)

    def validate(self) -> None:
        if self.tick > self.default_ttl:
            raise SettingsError("RTBFLEET_CACHE_TICK_SECONDS", "must not exceed the default ttl")
        if self.compress_min_bytes > self.l2_value_max_bytes:
            raise SettingsError(
                "RTBFLEET_CACHE_COMPRESS_MIN_BYTES", "must not exceed the L2 value limit"
            )
