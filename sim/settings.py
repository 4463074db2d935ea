"""The simulator's settings from ``RTBFLEET_SIM_*`` variables; ``rtbfleet demo`` options win."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from fleet.errors import SettingsError
from fleet.settings import fraction, non_negative, positive, setting


def _iso_datetime(value: str) -> str | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "must be an ISO 8601 date and time such as 2025-06-02T00:00:00+00:00"
    return None if parsed.tzinfo is not None else "must carry a UTC offset (+00:00)"


@dataclasses.dataclass(frozen=True)
class SimSettings:
    rate: float = setting(
        400.0,
        "RTBFLEET_SIM_RATE",
        "mean offered bid requests per second (open loop; the daily cycle moves it ±40 %)",
        positive,
    )
    duration: float = setting(150.0, "RTBFLEET_SIM_DURATION", "seconds of traffic", positive)
    seed: int = setting(1, "RTBFLEET_SIM_SEED", "seed of the market and the traffic")
    time_scale: float = setting(
        576.0,
        "RTBFLEET_SIM_TIME_SCALE",
        "simulated seconds per real second (576: one simulated day in 150 s)",
        positive,
    )
    sim_start: str = setting(
        "",
        "RTBFLEET_SIM_START",
        "the simulated clock at the start of traffic (ISO 8601; empty: today 00:00 UTC)",
        _iso_datetime,
    )
    clock_lead: float = setting(
        10.0,
        "RTBFLEET_SIM_CLOCK_LEAD",
        "seconds a local fleet's services get to start: the fleet clock reaches the simulated "
        "start this long after they are launched, and the traffic waits for it",
        non_negative,
    )
    connections: int = setting(
        64, "RTBFLEET_SIM_CONNECTIONS", "keep-alive connections to each bidder URL", positive
    )
    notice_connections: int = setting(
        64,  # notices wait for the tracker's group commit: a connection carries one at a time
        "RTBFLEET_SIM_NOTICE_CONNECTIONS",
        "keep-alive connections to each notice/tracker host",
        positive,
    )
    gzip_share: float = setting(
        0.2, "RTBFLEET_SIM_GZIP_SHARE", "share of bid requests sent gzip-compressed", fraction
    )
    ortb25_share: float = setting(
        0.25,
        "RTBFLEET_SIM_ORTB25_SHARE",
        "share of requests in the OpenRTB 2.5 layout (consent, gdpr, schain in ext)",
        fraction,
    )
    tmax_slack_ms: float = setting(
        50.0,
        "RTBFLEET_SIM_TMAX_SLACK_MS",
        "how long after tmax the exchange still waits (such answers count as late)",
        non_negative,
    )
    default_tmax_ms: int = setting(
        100, "RTBFLEET_SIM_DEFAULT_TMAX_MS", "the exchange's deadline when tmax is absent", positive
    )
    notice_timeout: float = setting(
        2.0, "RTBFLEET_SIM_NOTICE_TIMEOUT", "seconds to wait for a notice/pixel answer", positive
    )
    drain: float = setting(
        3.0,
        "RTBFLEET_SIM_DRAIN",
        "seconds after the traffic stops to send follow-ups already due",
        non_negative,
    )
    users: int = setting(20_000, "RTBFLEET_SIM_USERS", "distinct users in the market", positive)
    publishers: int = setting(
        240, "RTBFLEET_SIM_PUBLISHERS", "distinct placements (apps and sites)", positive
    )
    vendor_id: int = setting(
        755,
        "RTBFLEET_SIM_VENDOR_ID",
        "the DSP's TCF vendor id: consent strings grant or withhold it",
        positive,
    )
    report_dir: Path = setting(
        Path("reports"), "RTBFLEET_SIM_REPORT_DIR", "where reports/<timestamp>/ are written"
    )

    def validate(self) -> None:
        if self.vendor_id >= 1 << 16:
            raise SettingsError("RTBFLEET_SIM_VENDOR_ID", "must be below 65536")
        if self.users < 100:
            raise SettingsError("RTBFLEET_SIM_USERS", "must be at least 100")
        if self.publishers < 20:
            raise SettingsError("RTBFLEET_SIM_PUBLISHERS", "must be at least 20")

    def start(self, now: datetime) -> datetime:
        """The simulated clock's start: ``sim_start``, or midnight UTC of ``now``'s day."""
        if self.sim_start:
            return datetime.fromisoformat(self.sim_start)
        return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
