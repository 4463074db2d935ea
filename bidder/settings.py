"""The bidder service's settings: ``RTBFLEET_BIDDER_*`` variables plus the fleet-wide ones.

Built once at start-up (``BidderSettings.from_env()``), validated there (a bad value stops the
process with one line naming the variable), and passed down explicitly. The pipeline's knobs are
handed to the pure core as a plain ``PipelineSettings`` (``to_pipeline_settings()``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from bidder.options import DEFAULT_TMAX, PipelineSettings, TmaxBounds
from cache.settings import CacheSettings
from fleet.errors import SettingsError
from fleet.http.limits import HttpLimits
from fleet.settings import FleetSettings, fraction, load, non_negative, port, positive, setting
from fleet.signing import DEV_SIGNING_KEY


@dataclasses.dataclass(frozen=True)
class BidderSettings:
    """Everything one bidder process needs; ``fleet`` holds where Postgres, memcached and the
    buses are."""

    # -- HTTP ---------------------------------------------------------------------------------
    host: str = setting(
        "127.0.0.1", "RTBFLEET_BIDDER_HOST", "address to listen on (0.0.0.0 behind a balancer)"
    )
    port: int = setting(8080, "RTBFLEET_BIDDER_PORT", "HTTP port (shared by all processes)", port)
    processes: int = setting(
        1, "RTBFLEET_BIDDER_PROCESSES", "server processes sharing the port (0: one per core)"
    )
    bidder_id: str = setting(
        "", "RTBFLEET_BIDDER_ID", "this bidder's name in events and ids (empty: the host name)"
    )
    gzip_responses: bool = setting(
        True, "RTBFLEET_BIDDER_GZIP", "gzip bid responses when Accept-Encoding allows it"
    )
    nobid_body: bool = setting(
        False,
        "RTBFLEET_BIDDER_NOBID_BODY",
        "answer a no-bid with 200 and {id, nbr} instead of an empty 204",
    )
    drain_timeout_s: float = setting(
        5.0,
        "RTBFLEET_BIDDER_DRAIN_TIMEOUT",
        "on shutdown, seconds to let open requests finish before closing connections",
        non_negative,
    )
    # -- auction ------------------------------------------------------------------------------
    currency: str = setting("USD", "RTBFLEET_BIDDER_CURRENCY", "the bidding currency")
    seat: str = setting(
        "",
        "RTBFLEET_BIDDER_SEAT",
        "our seat id at the exchanges: deals that list seats (wseat) are bid on only with it",
    )
    tmax_default_ms: int = setting(
        DEFAULT_TMAX.default_ms,
        "RTBFLEET_BIDDER_TMAX_DEFAULT_MS",
        "tmax when a request has none",
        positive,
    )
    tmax_cap_ms: int = setting(
        DEFAULT_TMAX.cap_ms,
        "RTBFLEET_BIDDER_TMAX_CAP_MS",
        "never plan on more time than this",
        positive,
    )
    network_allowance_ms: int = setting(
        DEFAULT_TMAX.network_allowance_ms,
        "RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS",
        "taken off tmax for the way back to the exchange",
        non_negative,
    )
    margin: float = setting(
        0.2, "RTBFLEET_BIDDER_MARGIN", "second price: bid = value x (1 - margin)", fraction
    )
    max_priced_per_imp: int = setting(
        64,
        "RTBFLEET_BIDDER_MAX_PRICED_PER_IMP",
        "safety net: candidates priced per impression at most before the internal auction "
        "draws among them (0: no cap; the race usually stops long before)",
        non_negative,
    )
    early_stop: bool = setting(
        True,
        "RTBFLEET_BIDDER_EARLY_STOP",
        "stop pricing once no unpriced candidate can win the internal auction (the same "
        "answer as pricing every candidate; 0 prices all, a reference for diagnosis)",
    )
    min_bid_cpm_micros: int = setting(
        10_000, "RTBFLEET_BIDDER_MIN_BID_CPM_MICROS", "never bid below this CPM", non_negative
    )
    vendor_id: int = setting(
        0, "RTBFLEET_BIDDER_VENDOR_ID", "our IAB TCF vendor id (0: none, GDPR is contextual only)"
    )
    crawler_patterns: tuple[str, ...] = setting(
        (),
        "RTBFLEET_BIDDER_CRAWLER_PATTERNS",
        "user-agent substrings of crawlers (empty: the built-in list)",
    )
    datacenter_cidrs: tuple[str, ...] = setting(
        (), "RTBFLEET_BIDDER_DATACENTER_CIDRS", "data-centre IP ranges, comma-separated"
    )
    datacenter_cidr_file: str = setting(
        "",
        "RTBFLEET_BIDDER_DATACENTER_CIDR_FILE",
        "file of data-centre IP ranges, one CIDR a line (# comments)",
    )
    blocked_publishers: tuple[str, ...] = setting(
        (),
        "RTBFLEET_BIDDER_BLOCKED_PUBLISHERS",
        "publisher ids, site domains or app bundles never bid on",
    )
    reject_incomplete_schain: bool = setting(
        False,
        "RTBFLEET_BIDDER_REJECT_INCOMPLETE_SCHAIN",
        "no bid (nbr 16) on a request whose supply chain is missing or not complete",
    )
    # the tracker's URL, the signing key and the user key secret are the fleet's (FleetSettings)
    allow_dev_signing_key: bool = setting(
        False,
        "RTBFLEET_BIDDER_ALLOW_DEV_SIGNING_KEY",
        "development only: use a well-known key when RTBFLEET_SIGNING_KEY is empty",
    )
    notice_ttl_s: int = setting(
        86400, "RTBFLEET_BIDDER_NOTICE_TTL", "seconds a signed notice URL stays valid", positive
    )
    use_nurl: bool = setting(
        False, "RTBFLEET_BIDDER_USE_NURL", "send markup through the win notice instead of adm"
    )
    # -- overload shedding --------------------------------------------------------------------
    shed_enabled: bool = setting(True, "RTBFLEET_BIDDER_SHED", "shed load when overloaded")
    shed_wait_ms: float = setting(
        15.0,
        "RTBFLEET_BIDDER_SHED_WAIT_MS",
        "shed (204 before parsing) a request that has probably waited this long unread",
        positive,
    )
    shed_max_in_flight: int = setting(
        1000,
        "RTBFLEET_BIDDER_SHED_MAX_IN_FLIGHT",
        "requests being read or answered at once above which new ones are shed",
        positive,
    )
    lag_probe_ms: float = setting(
        2.0, "RTBFLEET_BIDDER_LAG_PROBE_MS", "event-loop lag probe interval", positive
    )
    # -- data sources -------------------------------------------------------------------------
    snapshot_refresh_s: float = setting(
        30.0,
        "RTBFLEET_BIDDER_SNAPSHOT_REFRESH",
        "seconds between config checks through the cache (safety net under the coherence bus)",
        positive,
    )
    notify_debounce_ms: float = setting(
        100.0,
        "RTBFLEET_BIDDER_NOTIFY_DEBOUNCE_MS",
        "after a config change is heard, wait this long for more before rebuilding the index",
        non_negative,
    )
    spend_refresh_s: float = setting(
        2.0,
        "RTBFLEET_BIDDER_SPEND_REFRESH",
        "seconds between reads of recorded campaign spend (budget gate)",
        positive,
    )
    pacing: bool = setting(
        True,
        "RTBFLEET_BIDDER_PACING",
        "pace budgeted campaigns by the pacer's spend leases (needs the pacer running; off:"
        " the recorded-spend gate alone)",
    )
    pacing_report_s: float = setting(
        5.0,
        "RTBFLEET_BIDDER_PACING_REPORT_SECONDS",
        "seconds between this process's reports to the pacer (the pacer's interval)",
        positive,
    )
    snapshot_file: str = setting(
        "",
        "RTBFLEET_BIDDER_PORTFOLIO_FILE",
        "serve this portfolio document (YAML/JSON) instead of reading Postgres (load tests)",
    )
    model_file: str = setting(
        "",
        "RTBFLEET_BIDDER_MODEL_FILE",
        "compiled model to score with (empty: priors until a learnt model arrives)",
    )
    model_check_s: float = setting(
        30.0,
        "RTBFLEET_BIDDER_MODEL_CHECK",
        "seconds between checks for a newer learnt model (announcements come at once)",
        positive,
    )
    frequency_ttl_s: float = setting(
        30.0,
        "RTBFLEET_BIDDER_FREQUENCY_TTL",
        "seconds a frequency counter read from memcached is reused",
        positive,
    )
    frequency_bid_window_s: float = setting(
        60.0,
        "RTBFLEET_BIDDER_FREQUENCY_BID_WINDOW",
        "seconds before a counter's read during which this process's own bids on a capped "
        "campaign still count against the user's cap (notices on their way when it was read)",
        positive,
    )
    frequency_threads: int = setting(
        2, "RTBFLEET_BIDDER_FREQUENCY_THREADS", "threads reading memcached", positive
    )
    frequency_max_pending: int = setting(
        10_000,
        "RTBFLEET_BIDDER_FREQUENCY_MAX_PENDING",
        "frequency counters waiting to be read at most (more misses are not scheduled)",
        positive,
    )
    # -- events and metrics -------------------------------------------------------------------
    publish_events: bool = setting(
        True, "RTBFLEET_BIDDER_PUBLISH_EVENTS", "publish auction and bid events to the event bus"
    )
    metrics_top_campaigns: int = setting(
        20,
        "RTBFLEET_BIDDER_METRICS_CAMPAIGNS",
        "campaigns with their own metric label (the largest budgets); the rest are 'other'",
        non_negative,
    )
    error_log_every: int = setting(
        1000,
        "RTBFLEET_BIDDER_ERROR_LOG_EVERY",
        "log one internal error in this many (all are counted)",
        positive,
    )

    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)
    http: HttpLimits = dataclasses.field(default_factory=HttpLimits)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> BidderSettings:
        """The bidder's, the fleet's, the cache's and the HTTP core's settings; raises
        SettingsError on a bad value."""
        fleet = load(FleetSettings, environ, env_file)
        cache = dataclasses.replace(load(CacheSettings, environ, env_file), fleet=fleet)
        http = load(HttpLimits, environ, env_file)
        settings = dataclasses.replace(
            load(cls, environ, env_file), fleet=fleet, cache=cache, http=http
        )
        fleet.require_signing_key(
            "RTBFLEET_BIDDER_ALLOW_DEV_SIGNING_KEY", settings.allow_dev_signing_key
        )
        return settings

    def validate(self) -> None:
        if self.processes < 0:
            raise SettingsError("RTBFLEET_BIDDER_PROCESSES", "must be 0 (one per core) or more")
        problem = self.tmax.problem()
        if problem is not None:
            raise SettingsError(_TMAX_VARIABLES[problem[0]], problem[1])
        if len(self.currency) != 3 or not self.currency.isupper():
            raise SettingsError("RTBFLEET_BIDDER_CURRENCY", f"{self.currency!r} is not ISO 4217")
        for cidr in self.datacenter_cidrs:
            _check_cidr("RTBFLEET_BIDDER_DATACENTER_CIDRS", cidr)
        if self.datacenter_cidr_file:
            self.file_cidrs()
        if self.snapshot_file and not Path(self.snapshot_file).is_file():
            raise SettingsError("RTBFLEET_BIDDER_PORTFOLIO_FILE", "is not a readable file")
        if self.model_file and not Path(self.model_file).is_file():
            raise SettingsError("RTBFLEET_BIDDER_MODEL_FILE", "is not a readable file")

    # -- derived ------------------------------------------------------------------------------

    @property
    def tmax(self) -> TmaxBounds:
        return TmaxBounds(self.tmax_default_ms, self.tmax_cap_ms, self.network_allowance_ms)

    @property
    def process_count(self) -> int:
        return self.processes or os.cpu_count() or 1

    def name(self, index: int = 0) -> str:
        """This process's bidder id: unique per server process, stable across restarts."""
        base = self.bidder_id or socket.gethostname().split(".")[0] or "bidder"
        return f"{base}-{index}"

    def file_cidrs(self) -> tuple[str, ...]:
        variable = "RTBFLEET_BIDDER_DATACENTER_CIDR_FILE"
        try:
            text = Path(self.datacenter_cidr_file).read_text()
        except OSError as exc:
            raise SettingsError(variable, f"cannot be read ({exc.strerror})") from None
        cidrs = []
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                _check_cidr(variable, entry)
                cidrs.append(entry)
        return tuple(cidrs)

    def all_datacenter_cidrs(self) -> tuple[str, ...]:
        extra = self.file_cidrs() if self.datacenter_cidr_file else ()
        return self.datacenter_cidrs + extra

    def to_pipeline_settings(self, index: int = 0) -> PipelineSettings:
        """The pure core's knobs for server process ``index``."""
        settings = PipelineSettings(
            bidder_id=self.name(index),
            seat=self.seat,
            currency=self.currency,
            tmax=self.tmax,
            margin=self.margin,
            max_priced_per_imp=self.max_priced_per_imp,
            early_stop=self.early_stop,
            min_bid_cpm_micros=self.min_bid_cpm_micros,
            vendor_id=self.vendor_id,
            datacenter_cidrs=self.all_datacenter_cidrs(),
            blocked_publishers=self.blocked_publishers,
            reject_incomplete_schain=self.reject_incomplete_schain,
            tracker_base_url=self.fleet.tracker_url,
            signing_key=self.fleet.signing_key_bytes,
            user_key_secret=self.fleet.user_key_secret_bytes,
            notice_ttl_s=self.notice_ttl_s,
            nobid_body=self.nobid_body,
            use_nurl=self.use_nurl,
        )
        if self.crawler_patterns:
            settings = dataclasses.replace(settings, crawler_ua_patterns=self.crawler_patterns)
        return settings


_TMAX_VARIABLES = {
    "default_ms": "RTBFLEET_BIDDER_TMAX_DEFAULT_MS",
    "cap_ms": "RTBFLEET_BIDDER_TMAX_CAP_MS",
    "network_allowance_ms": "RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS",
}


def _check_cidr(variable: str, cidr: str) -> None:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise SettingsError(variable, f"{cidr!r} is not an IP range (CIDR)") from None


__all__ = ["DEV_SIGNING_KEY", "BidderSettings"]
