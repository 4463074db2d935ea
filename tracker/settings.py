"""The tracker's settings: ``RTBFLEET_TRACKER_*`` variables plus the fleet-wide ones.

Built once at start-up (``TrackerSettings.from_env()``), validated there (a bad value stops the
process with one line naming the variable), and passed down explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from fleet.errors import SettingsError
from fleet.http.limits import HttpLimits
from fleet.settings import FleetSettings, load, non_negative, port, positive, setting


def _at_least_one(value: float) -> str | None:
    return None if value >= 1 else "must be at least 1"


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
    # -- HTTP (the tracker's URL, the signing keys and the user key secret are the fleet's:
    # the bidder signs with the same ones) -----------------------------------------------------
    host: str = setting("127.0.0.1", "RTBFLEET_TRACKER_HOST", "address to listen on")
    port: int = setting(8090, "RTBFLEET_TRACKER_PORT", "tracker HTTP port", port)
    allow_dev_signing_key: bool = setting(
        False,
        "RTBFLEET_TRACKER_ALLOW_DEV_SIGNING_KEY",
        "development only: verify with the well-known key when RTBFLEET_SIGNING_KEY is empty",
    )
    # -- Postgres -------------------------------------------------------------------------------
    batch_max: int = setting(
        500, "RTBFLEET_TRACKER_BATCH_MAX", "notices committed in one transaction at most", positive
    )
    batch_concurrency: int = setting(
        4,
        "RTBFLEET_TRACKER_BATCH_CONCURRENCY",
        "transactions in flight at once (notices arriving meanwhile join the next)",
        positive,
    )
    spend_lanes: int = setting(
        16,
        "RTBFLEET_TRACKER_SPEND_LANES",
        "spend rows per campaign and day in the whole fleet: each concurrent commit of a tracker "
        "adds to its own (a random run of BATCH_CONCURRENCY of them per process); readers sum",
        positive,
    )
    pool_size: int = setting(
        6,
        "RTBFLEET_TRACKER_PG_POOL",
        "Postgres connections (more than BATCH_CONCURRENCY: postbacks and the catalog need one)",
        positive,
    )
    pg_timeout: float = setting(
        2.0,
        "RTBFLEET_TRACKER_PG_TIMEOUT_SECONDS",
        "a commit not done in this time is answered 503 (the sender retries)",
        positive,
    )
    catalog_refresh: float = setting(
        30.0,
        "RTBFLEET_TRACKER_CATALOG_REFRESH_SECONDS",
        "campaigns, creatives and exchange rates are read again this often",
        positive,
    )
    retention_seconds: int = setting(
        7 * 86400,
        "RTBFLEET_TRACKER_DEDUPE_RETENTION_SECONDS",
        "dedupe rows are kept this long (longer than any notice URL lives)",
        positive,
    )
    # -- frequency counters ----------------------------------------------------------------------
    frequency_threads: int = setting(
        2, "RTBFLEET_TRACKER_FREQUENCY_THREADS", "threads writing memcached counters", positive
    )
    frequency_max_pending: int = setting(
        10_000,
        "RTBFLEET_TRACKER_FREQUENCY_MAX_PENDING",
        "counter increments waiting at most (more are dropped and counted)",
        positive,
    )
    # -- postbacks ------------------------------------------------------------------------------
    postback_partners: tuple[str, ...] = setting(
        (),
        "RTBFLEET_TRACKER_POSTBACK_PARTNERS",
        "measurement partners whose postbacks are accepted (empty: any named partner)",
    )
    # -- Kinesis --------------------------------------------------------------------------------
    kinesis: bool = setting(False, "RTBFLEET_TRACKER_KINESIS", "send conversions to Kinesis")
    kinesis_endpoint: str = setting(
        "", "RTBFLEET_TRACKER_KINESIS_ENDPOINT", "Kinesis endpoint URL (empty: the AWS default)"
    )
    kinesis_region: str = setting("us-east-1", "RTBFLEET_TRACKER_KINESIS_REGION", "AWS region")
    stream_attributed: str = setting(
        "rtbfleet-conversions",
        "RTBFLEET_TRACKER_STREAM_ATTRIBUTED",
        "Kinesis stream of attributed installs and events",
    )
    stream_organic: str = setting(
        "rtbfleet-organic",
        "RTBFLEET_TRACKER_STREAM_ORGANIC",
        "Kinesis stream of organic installs and events",
    )
    spool_dir: Path = setting(
        Path(""),
        "RTBFLEET_TRACKER_SPOOL_DIR",
        "where conversions wait for Kinesis (empty: <data dir>/tracker-spool)",
    )
    spool_max_bytes: int = setting(
        256 * 1024 * 1024,
        "RTBFLEET_TRACKER_SPOOL_MAX_BYTES",
        "the spool's size at most; records past it are dropped and counted",
        positive,
    )
    kinesis_max_backoff: float = setting(
        30.0,
        "RTBFLEET_TRACKER_KINESIS_MAX_BACKOFF_SECONDS",
        "longest wait between two attempts",
        positive,
    )
    # -- cost per activation --------------------------------------------------------------------
    cpa_interval: float = setting(
        300.0,
        "RTBFLEET_TRACKER_CPA_INTERVAL_SECONDS",
        "cost per activation is computed this often (fleet time)",
        positive,
    )
    cpa_factor: float = setting(
        2.0,
        "RTBFLEET_TRACKER_CPA_FACTOR",
        "pause when cost per activation stays above the target times this",
        _at_least_one,
    )
    cpa_min_spend_micros: int = setting(
        50_000_000,
        "RTBFLEET_TRACKER_CPA_MIN_SPEND_MICROS",
        "no pause before this spend (campaign currency micros)",
        non_negative,
    )
    cpa_rounds: int = setting(
        2,
        "RTBFLEET_TRACKER_CPA_ROUNDS",
        "evaluations in a row above target before a pause",
        positive,
    )

    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)
    http: HttpLimits = dataclasses.field(default_factory=HttpLimits)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> TrackerSettings:
        fleet = load(FleetSettings, environ, env_file)
        http = load(HttpLimits, environ, env_file)
        settings = dataclasses.replace(load(cls, environ, env_file), fleet=fleet, http=http)
        fleet.require_signing_key(
            "RTBFLEET_TRACKER_ALLOW_DEV_SIGNING_KEY", settings.allow_dev_signing_key
        )
        return settings

    def validate(self) -> None:
        if self.spend_lanes > 32767:  # a lane is a smallint
            raise SettingsError("RTBFLEET_TRACKER_SPEND_LANES", "must be at most 32767")
        if self.batch_concurrency > self.spend_lanes:
            raise SettingsError(
                "RTBFLEET_TRACKER_BATCH_CONCURRENCY",
                f"must be at most RTBFLEET_TRACKER_SPEND_LANES ({self.spend_lanes}): "
                "each concurrent commit needs a spend lane of its own",
            )
        if self.pool_size <= self.batch_concurrency:
            raise SettingsError(
                "RTBFLEET_TRACKER_PG_POOL",
                f"must exceed RTBFLEET_TRACKER_BATCH_CONCURRENCY ({self.batch_concurrency}): "
                "postbacks and the catalog need a connection while every commit is in flight",
            )
        if self.stream_attributed == self.stream_organic:
            raise SettingsError(
                "RTBFLEET_TRACKER_STREAM_ORGANIC", "must differ from the attributed stream"
            )

    # -- derived --------------------------------------------------------------------------------

    @property
    def spool_path(self) -> Path:
        return (
            self.spool_dir
            if str(self.spool_dir) not in ("", ".")
            else (self.fleet.data_dir / "tracker-spool")
        )
