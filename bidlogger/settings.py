"""The bid logger's settings: ``RTBFLEET_BIDLOGGER_*`` variables plus the fleet-wide ones.

Built once at start-up (``BidloggerSettings.from_env()``); a bad value stops the process with one
line naming the variable. One logger process per partition set: ``RTBFLEET_BIDLOGGER_PARTITIONS``
(``all``, or ``0-15``...) of ``RTBFLEET_EVENT_PARTITIONS``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from bidlogger.errors import PartitionSpecError
from bidlogger.partitions import canonical, parse_partitions
from cache.settings import CacheSettings
from fleet.errors import SettingsError
from fleet.events import EVENT_TYPES
from fleet.settings import FleetSettings, load, non_negative, port, positive, setting

_LOGGER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _logger_id(value: str) -> str | None:
    if value == "" or _LOGGER_ID.match(value):
        return None
    return "must be 1-63 letters, digits, '.', '_' or '-' (it names files and rows)"


def _object_store(value: str) -> str | None:
    if value == "" or value.startswith(("s3://", "file://")):
        return None
    return "must be empty (a local directory), file:///path or s3://bucket[/prefix]"


@dataclasses.dataclass(frozen=True)
class BidloggerSettings:
    """One logger: what it subscribes to, where it writes, how long tiers are kept."""

    partitions: str = setting(
        "all",
        "RTBFLEET_BIDLOGGER_PARTITIONS",
        "event-bus partitions held: all, or numbers and ranges such as 0-15,32",
    )
    event_types: tuple[str, ...] = setting(
        EVENT_TYPES, "RTBFLEET_BIDLOGGER_EVENT_TYPES", "event types subscribed to (comma-separated)"
    )
    logger_id: str = setting(
        "",
        "RTBFLEET_BIDLOGGER_ID",
        "stable id of this logger in batches and file names (empty: bidlogger-<partitions>)",
        _logger_id,
    )
    raw_partitions: str = setting(
        "0",
        "RTBFLEET_BIDLOGGER_RAW_PARTITIONS",
        "partitions whose events are also stored whole (Postgres and Parquet); empty: none",
    )
    raw_types: tuple[str, ...] = setting(
        EVENT_TYPES, "RTBFLEET_BIDLOGGER_RAW_TYPES", "event types kept in the raw sample"
    )
    flush_interval: float = setting(
        1.0, "RTBFLEET_BIDLOGGER_FLUSH_SECONDS", "aggregates are flushed this often", positive
    )
    join_ttl: float = setting(
        3600.0,
        "RTBFLEET_BIDLOGGER_JOIN_TTL_SECONDS",
        "how long (event time) a bid waits for its impression to join it",
        positive,
    )
    join_max_entries: int = setting(
        1_000_000,
        "RTBFLEET_BIDLOGGER_JOIN_MAX_ENTRIES",
        "bids held for the impression join; the oldest go first past this",
        positive,
    )
    gc_young: int = setting(
        50_000,
        "RTBFLEET_BIDLOGGER_GC_YOUNG",
        "container objects allocated between young-generation collections in the logger "
        "process (Python's default is 700; 0 leaves the interpreter's settings alone)",
        non_negative,
    )
    state_dir: str = setting(
        "",
        "RTBFLEET_BIDLOGGER_STATE_DIR",
        "spool, Parquet outbox and positions (empty: <data dir>/bidlogger/<logger id>)",
    )
    spool_max_bytes: int = setting(
        1 << 30,
        "RTBFLEET_BIDLOGGER_SPOOL_MAX_BYTES",
        "batches kept on disk while Postgres is unavailable; past it they are dropped (counted)",
        positive,
    )
    object_store: str = setting(
        "",
        "RTBFLEET_BIDLOGGER_OBJECT_STORE",
        "where Parquet files go: s3://bucket[/prefix], file:///dir, or empty (<data dir>/objects)",
        _object_store,
    )
    s3_endpoint: str = setting(
        "", "RTBFLEET_BIDLOGGER_S3_ENDPOINT", "S3-compatible endpoint URL (empty: AWS)"
    )
    s3_region: str = setting("us-east-1", "RTBFLEET_BIDLOGGER_S3_REGION", "S3 region")
    parquet_max_rows: int = setting(
        500_000,
        "RTBFLEET_BIDLOGGER_PARQUET_MAX_ROWS",
        "rows per Parquet file at most (an hour may take several files)",
        positive,
    )
    parquet_max_seconds: float = setting(
        600.0,
        "RTBFLEET_BIDLOGGER_PARQUET_MAX_SECONDS",
        "an open hourly segment is written out after this long at most",
        positive,
    )
    upload_retry: float = setting(
        5.0,
        "RTBFLEET_BIDLOGGER_UPLOAD_RETRY_SECONDS",
        "after a failed upload, wait this long before the next",
        positive,
    )
    raw_days: int = setting(
        7, "RTBFLEET_BIDLOGGER_RAW_DAYS", "days of raw rows and minute aggregates kept", positive
    )
    hourly_days: int = setting(
        92, "RTBFLEET_BIDLOGGER_HOURLY_DAYS", "days of hourly roll-ups kept", positive
    )
    daily_days: int = setting(
        0,
        "RTBFLEET_BIDLOGGER_DAILY_DAYS",
        "days of daily roll-ups kept (0: for good)",
        non_negative,
    )
    maintenance_interval: float = setting(
        60.0,
        "RTBFLEET_BIDLOGGER_MAINTENANCE_SECONDS",
        "how often the leading logger rolls up, drops old partitions and publishes the feed",
        positive,
    )
    feed_window_days: int = setting(
        7,
        "RTBFLEET_BIDLOGGER_FEED_WINDOW_DAYS",
        "creative feed: impressions and clicks of this many recent days",
        positive,
    )
    leader_lock_key: int = setting(
        0x72746266_626C6F67,
        "RTBFLEET_BIDLOGGER_LEADER_LOCK_KEY",
        "Postgres advisory lock the loggers compete for to run maintenance and the feed",
    )
    heartbeat_timeout: float = setting(
        3.0,
        "RTBFLEET_BIDLOGGER_HEARTBEAT_TIMEOUT_SECONDS",
        "a publisher silent this long is reported silent",
        positive,
    )
    host: str = setting("127.0.0.1", "RTBFLEET_BIDLOGGER_HOST", "address of /healthz and /metrics")
    port: int = setting(
        8094,
        "RTBFLEET_BIDLOGGER_PORT",
        "port of /healthz and /metrics (0: any free port, printed as 'listening <port>')",
        port,
    )
    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> BidloggerSettings:
        fleet = load(FleetSettings, environ, env_file)
        cache = dataclasses.replace(load(CacheSettings, environ, env_file), fleet=fleet)
        settings = dataclasses.replace(load(cls, environ, env_file), fleet=fleet, cache=cache)
        settings.check_partitions()  # needs the fleet's partition count
        return settings

    def check_partitions(self) -> None:
        for variable, spec in (
            ("RTBFLEET_BIDLOGGER_PARTITIONS", self.partitions),
            ("RTBFLEET_BIDLOGGER_RAW_PARTITIONS", self.raw_partitions),
        ):
            try:
                parse_partitions(spec, self.fleet.event_partitions)
            except PartitionSpecError as exc:
                raise SettingsError(variable, str(exc)) from None
        if not self.held:
            raise SettingsError("RTBFLEET_BIDLOGGER_PARTITIONS", "holds no partition")

    def validate(self) -> None:
        for variable, types in (
            ("RTBFLEET_BIDLOGGER_EVENT_TYPES", self.event_types),
            ("RTBFLEET_BIDLOGGER_RAW_TYPES", self.raw_types),
        ):
            unknown = [t for t in types if t not in EVENT_TYPES]
            if unknown:
                raise SettingsError(variable, f"unknown event type(s) {', '.join(unknown)}")
        if not self.event_types:
            raise SettingsError("RTBFLEET_BIDLOGGER_EVENT_TYPES", "names no event type")
        if self.hourly_days < self.raw_days:
            raise SettingsError("RTBFLEET_BIDLOGGER_HOURLY_DAYS", "must be at least the raw days")
        if self.daily_days and self.daily_days < self.hourly_days:
            raise SettingsError(
                "RTBFLEET_BIDLOGGER_DAILY_DAYS", "must be 0 (for good) or at least the hourly days"
            )

    @property
    def total_partitions(self) -> int:
        return self.fleet.event_partitions

    @property
    def held(self) -> frozenset[int]:
        return parse_partitions(self.partitions, self.total_partitions)

    @property
    def raw_held(self) -> frozenset[int]:
        """Raw-sample partitions: those configured that this logger holds."""
        return parse_partitions(self.raw_partitions, self.total_partitions) & self.held

    @property
    def shard(self) -> str:
        return canonical(self.held, self.total_partitions)

    @property
    def effective_logger_id(self) -> str:
        if self.logger_id:
            return self.logger_id
        spec = self.shard.replace("/", "of").replace(",", "_")
        return f"bidlogger-{spec}"[:63]

    @property
    def effective_state_dir(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        return self.fleet.data_dir / "bidlogger" / self.effective_logger_id
