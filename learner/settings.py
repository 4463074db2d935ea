"""The learner's settings: ``RTBFLEET_LEARNER_*`` variables, built once and validated at start.

The estimator grids are written as estimators separated by ``;``, each a comma-separated list
of ``key=value`` with keys alpha, beta, l1, l2, bits, half_life (examples; 0: no decay) and
loss; unnamed keys take FtrlParams' defaults. For example::

    RTBFLEET_LEARNER_CLICK_GRID="alpha=0.05,l1=1;alpha=0.1,l1=1;alpha=0.1,half_life=2e6"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cache.settings import CacheSettings
from fleet.errors import SettingsError
from fleet.model import PRIOR_CLICK_RATE, PRIOR_INSTALL_RATE
from fleet.settings import FleetSettings, fraction, load, port, positive, setting
from learner.errors import BadParameters
from learner.ftrl import FtrlParams
from learner.grid import GridSettings
from learner.join import JoinSettings
from learner.market import MarketSettings
from learner.online import DEFAULT_GRID, LearnerConfig

# The session-level advisory lock held by the fleet's one learner ("rtbflrnr").
DEFAULT_LEARNER_LOCK_KEY = 0x72746266_6C726E72

_FLOATS = ("alpha", "beta", "l1", "l2", "half_life")


def format_grid(grid: tuple[FtrlParams, ...]) -> str:
    return ";".join(
        f"alpha={p.alpha:g},beta={p.beta:g},l1={p.l1:g},l2={p.l2:g},bits={p.bits},"
        f"half_life={p.half_life:g},loss={p.loss}"
        for p in grid
    )


def parse_grid(text: str) -> tuple[FtrlParams, ...]:
    """Estimators from ``key=value,...;key=value,...``; BadParameters says what is wrong."""
    grid = []
    for n, part in enumerate(p for p in text.split(";") if p.strip()):
        kwargs: dict[str, Any] = {}
        for item in (i for i in part.split(",") if i.strip()):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise BadParameters(f"estimator {n + 1}: expected key=value, got {item.strip()!r}")
            try:
                if key in _FLOATS:
                    kwargs[key] = float(value)
                elif key == "bits":
                    kwargs[key] = int(value)
                elif key == "loss":
                    kwargs[key] = value.strip()
                else:
                    raise BadParameters(f"estimator {n + 1}: unknown key {key!r}")
            except ValueError:
                reason = f"estimator {n + 1}: {key}={value.strip()!r} is not a number"
                raise BadParameters(reason) from None
        try:
            grid.append(FtrlParams(**kwargs))
        except BadParameters as exc:
            raise BadParameters(f"estimator {n + 1}: {exc}") from None
    if not grid:
        raise BadParameters("the grid needs at least one estimator")
    return tuple(grid)


def _grid(value: str) -> str | None:
    try:
        parse_grid(value)
    except BadParameters as exc:
        return str(exc)
    return None


def parse_share(text: str) -> tuple[int, int]:
    """``i/k``: this process holds the event partitions p with p mod k == i (``0/1``: all)."""
    index, sep, count = text.strip().partition("/")
    try:
        i, k = int(index), int(count)
    except ValueError:
        raise BadParameters(f"{text!r} is not of the form i/k") from None
    if not sep or k < 1 or not 0 <= i < k:
        raise BadParameters(f"{text!r}: need k >= 1 and 0 <= i < k")
    return i, k


def _share(value: str) -> str | None:
    try:
        parse_share(value)
    except BadParameters:  # the settings' message names the value already
        return "must be i/k with k >= 1 and 0 <= i < k (0/1: every partition)"
    return None


def _rate(value: float) -> str | None:
    return None if 0.0 < value < 1.0 else "must be a rate in (0, 1)"


def _u32(value: int) -> str | None:
    return None if 0 <= value < 1 << 32 else "must be a 32-bit unsigned integer"


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    click_grid: str = setting(
        format_grid(DEFAULT_GRID), "RTBFLEET_LEARNER_CLICK_GRID", "click-head estimators", _grid
    )
    install_grid: str = setting(
        format_grid(DEFAULT_GRID[:2]),
        "RTBFLEET_LEARNER_INSTALL_GRID",
        "install-head estimators",
        _grid,
    )
    click_prior: float = setting(
        PRIOR_CLICK_RATE,
        "RTBFLEET_LEARNER_CLICK_PRIOR",
        "click rate the click head starts from (its bias at the logit; the bidder's prior)",
        _rate,
    )
    install_prior: float = setting(
        PRIOR_INSTALL_RATE,
        "RTBFLEET_LEARNER_INSTALL_PRIOR",
        "install-given-click rate the install head starts from",
        _rate,
    )
    hash_seed: int = setting(
        0, "RTBFLEET_LEARNER_HASH_SEED", "MurmurHash3 seed of the features (the model's)", _u32
    )
    batch_examples: int = setting(
        4096, "RTBFLEET_LEARNER_BATCH_EXAMPLES", "examples learnt per batch", positive
    )
    click_window_s: float = setting(
        1800.0, "RTBFLEET_LEARNER_CLICK_WINDOW_S", "a click labels its impression within", positive
    )
    install_window_s: float = setting(
        86_400.0,
        "RTBFLEET_LEARNER_INSTALL_WINDOW_S",
        "an attributed install labels its click within",
        positive,
    )
    bid_ttl_s: float = setting(
        600.0, "RTBFLEET_LEARNER_BID_TTL_S", "a bid waits for its impression, win or loss", positive
    )
    max_waiting: int = setting(
        500_000, "RTBFLEET_LEARNER_MAX_WAITING", "examples waiting for a label, per head", positive
    )
    max_bids: int = setting(
        200_000, "RTBFLEET_LEARNER_MAX_BIDS", "bids waiting for their outcome", positive
    )
    negative_rate: float = setting(
        1.0,
        "RTBFLEET_LEARNER_NEGATIVE_RATE",
        "share of negatives kept (weighted by its inverse)",
        lambda v: fraction(v) if v > 0 else "must be in (0, 1]",
    )
    block_examples: int = setting(
        2000, "RTBFLEET_LEARNER_BLOCK_EXAMPLES", "progressive-validation block size", positive
    )
    window_blocks: int = setting(
        100, "RTBFLEET_LEARNER_WINDOW_BLOCKS", "blocks in the validation window", positive
    )
    confidence: float = setting(
        0.95,
        "RTBFLEET_LEARNER_CONFIDENCE",
        "a challenger must be better in this share of bootstrap resamples",
        lambda v: None if 0.5 < v < 1 else "must be in (0.5, 1)",
    )
    market_half_life_s: float = setting(
        6 * 3600.0,
        "RTBFLEET_LEARNER_MARKET_HALF_LIFE_S",
        "half-life of the market-price evidence (0: never fades)",
        lambda v: None if v >= 0 else "must be 0 or more",
    )
    checkpoint_path: Path = setting(
        Path(""),
        "RTBFLEET_LEARNER_CHECKPOINT",
        "checkpoint file (empty: <data dir>/learner.ckpt)",
    )
    inverse_capacity: int = setting(
        100_000,
        "RTBFLEET_LEARNER_INVERSE_CAPACITY",
        "feature names kept for the heaviest",
        positive,
    )

    share: str = setting(
        "0/1",
        "RTBFLEET_LEARNER_SHARE",
        "i/k: this learner joins the event partitions p with p mod k == i, a consistent 1/k "
        "sample (without a relay: the fleet's one learner, a second one refuses to start)",
        _share,
    )
    relay_bind: str = setting(
        "",
        "RTBFLEET_LEARNER_RELAY_BIND",
        "learners that split the partitions: where this one, when it leads, receives the "
        "others' joined examples (a ZMQ endpoint, e.g. tcp://0.0.0.0:9105); empty: one "
        "learner per fleet",
        lambda v: None if not v or "://" in v else "must be a ZMQ endpoint such as tcp://host:port",
    )
    relay_address: str = setting(
        "",
        "RTBFLEET_LEARNER_RELAY_ADDRESS",
        "the endpoint the other learners reach this one's relay at (empty: the bound one)",
        lambda v: None if not v or "://" in v else "must be a ZMQ endpoint such as tcp://host:port",
    )
    leader_poll_s: float = setting(
        2.0,
        "RTBFLEET_LEARNER_LEADER_POLL_S",
        "learners that split the partitions: seconds between looks at the leader (its lock, "
        "its address)",
        positive,
    )
    lock_key: int = setting(
        DEFAULT_LEARNER_LOCK_KEY,
        "RTBFLEET_LEARNER_LOCK_KEY",
        "Postgres advisory lock key held by the fleet's one learner (or its leader)",
    )
    export_interval_s: float = setting(
        60.0, "RTBFLEET_LEARNER_EXPORT_INTERVAL_S", "seconds between model exports", positive
    )
    checkpoint_interval_s: float = setting(
        300.0, "RTBFLEET_LEARNER_CHECKPOINT_INTERVAL_S", "seconds between checkpoints", positive
    )
    flush_interval_s: float = setting(
        2.0,
        "RTBFLEET_LEARNER_FLUSH_INTERVAL_S",
        "seconds between training rounds (settled examples are learnt)",
        positive,
    )
    heartbeat_timeout: float = setting(
        3.0,
        "RTBFLEET_LEARNER_HEARTBEAT_TIMEOUT_SECONDS",
        "an event publisher silent this long is reported silent",
        positive,
    )
    host: str = setting("127.0.0.1", "RTBFLEET_LEARNER_HOST", "address of /healthz and /metrics")
    port: int = setting(9104, "RTBFLEET_LEARNER_PORT", "port of /healthz and /metrics", port)
    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> LearnerSettings:
        fleet = load(FleetSettings, environ, env_file)
        cache = dataclasses.replace(load(CacheSettings, environ, env_file), fleet=fleet)
        return dataclasses.replace(load(cls, environ, env_file), fleet=fleet, cache=cache)

    @property
    def checkpoint_file(self) -> Path:
        """Where the checkpoint is kept: the setting, else in the fleet's data directory (so a
        fleet started on another data directory does not resume another fleet's learner)."""
        if str(self.checkpoint_path) not in ("", "."):
            return self.checkpoint_path
        return self.fleet.data_dir / "learner.ckpt"

    def partitions(self) -> list[int]:
        """The event-bus partitions this learner holds."""
        i, k = parse_share(self.share)
        return [p for p in range(self.fleet.event_partitions) if p % k == i]

    def to_config(self) -> LearnerConfig:
        try:
            return LearnerConfig(
                click_grid=parse_grid(self.click_grid),
                install_grid=parse_grid(self.install_grid),
                grid=GridSettings(
                    block_examples=self.block_examples,
                    window_blocks=self.window_blocks,
                    confidence=self.confidence,
                    min_blocks=min(10, self.window_blocks),
                ),
                join=JoinSettings(
                    click_window_s=self.click_window_s,
                    install_window_s=self.install_window_s,
                    bid_ttl_s=self.bid_ttl_s,
                    max_bids=self.max_bids,
                    max_waiting=self.max_waiting,
                    negative_rate=self.negative_rate,
                ),
                market=MarketSettings(),
                seed=self.hash_seed,
                market_half_life_s=self.market_half_life_s,
                batch_examples=self.batch_examples,
                click_prior=self.click_prior,
                install_prior=self.install_prior,
                inverse_capacity=self.inverse_capacity,
            )
        except BadParameters as exc:
            raise SettingsError("RTBFLEET_LEARNER_*", str(exc)) from None
