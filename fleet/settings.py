"""Frozen settings objects built once from ``RTBFLEET_*`` environment variables.

Each service declares a frozen dataclass whose fields are made with :func:`setting`; ``load()``
reads the process environment (and a ``.env`` file when present, which the environment
overrides), converts each value to the field's type, runs its check, and raises
:class:`SettingsError` naming the variable and the reason on the first bad value. Services build
their settings once at start-up and pass them down explicitly.

Supported field types: str, int, float, bool, pathlib.Path and tuple[str, ...] (comma-separated).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fleet.clock import FleetClock, instant_check, scale_check
from fleet.errors import SettingsError
from fleet.signing import DEV_SIGNING_KEY

T = TypeVar("T")
PREFIX = "RTBFLEET_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting(
    default: Any,
    env: str,
    help: str = "",
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A settings field read from ``env``; ``check`` returns a reason when the value is bad."""
    return dataclasses.field(default=default, metadata={"env": env, "help": help, "check": check})


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def fraction(value: float) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


def zmq_endpoint(value: str) -> str | None:
    ok = value.startswith(("tcp://", "ipc://", "inproc://"))
    return None if ok else "must be a ZMQ endpoint such as tcp://127.0.0.1:5550"


def http_origin(value: str) -> str | None:
    ok = value.startswith(("http://", "https://")) and not value.endswith("/")
    return None if ok else "must be an http(s) URL without a trailing slash"


MIN_SIGNING_KEY_BYTES = 16


def _signing_key(value: str) -> str | None:
    if value and len(value.encode()) < MIN_SIGNING_KEY_BYTES:
        return f"must be at least {MIN_SIGNING_KEY_BYTES} bytes"
    return None


def _signing_keys(values: tuple[str, ...]) -> str | None:
    return next(filter(None, map(_signing_key, values)), None)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments and blank lines ignored; optional quotes stripped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{lineno}", "expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _convert(variable: str, raw: str, kind: Any) -> Any:
    try:
        if kind is str:
            return raw
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(raw.strip().replace("_", ""))
        if kind is float:
            return float(raw.strip())
        if kind is Path:
            return Path(raw).expanduser()
        if typing.get_origin(kind) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        raise SettingsError(variable, f"{raw!r} is not a valid {name}") from None
    raise TypeError(f"unsupported settings type {kind!r} for {variable}")


def load(
    cls: type[T],
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
) -> T:
    """Build ``cls`` from the environment; raises SettingsError on the first bad value."""
    values: dict[str, str] = {}
    if env_file is not None:
        values.update(read_env_file(env_file))
    values.update(os.environ if environ is None else environ)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        variable = f.metadata.get("env")
        if variable is None:
            continue
        value = f.default
        if variable in values:
            value = _convert(variable, values[variable], hints[f.name])
        check = f.metadata.get("check")
        if check is not None:
            reason = check(value)
            if reason:
                raise SettingsError(variable, f"{value!r} {reason}")
        kwargs[f.name] = value
    settings = cls(**kwargs)
    validate = getattr(settings, "validate", None)
    if callable(validate):
        validate()
    return settings


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(variable, default, help) for each field: the configuration table in the README."""
    rows = []
    for f in dataclasses.fields(cls):
        if "env" in f.metadata:
            default = f.default
            shown = ",".join(default) if isinstance(default, tuple) else str(default)
            rows.append((f.metadata["env"], shown, f.metadata["help"]))
    return rows


@dataclasses.dataclass(frozen=True)
class FleetSettings:
    """What every service shares: where the data, the database, memcached and the buses are."""

    data_dir: Path = setting(
        Path("data"), "RTBFLEET_DATA_DIR", "embedded Postgres data, logs, models"
    )
    pg_dsn: str = setting(
        "", "RTBFLEET_PG_DSN", "Postgres DSN; empty starts the embedded Postgres in data_dir"
    )
    memcached: str = setting(
        "127.0.0.1:11211",
        "RTBFLEET_MEMCACHED",
        "host:port[,host:port...] of memcached; empty runs without L2",
    )
    event_bus_in: str = setting(
        "tcp://127.0.0.1:5550",
        "RTBFLEET_EVENT_BUS_IN",
        "event bus proxy's XSUB side (publishers connect here)",
        zmq_endpoint,
    )
    event_bus_out: str = setting(
        "tcp://127.0.0.1:5551",
        "RTBFLEET_EVENT_BUS_OUT",
        "event bus proxy's XPUB side (subscribers connect here)",
        zmq_endpoint,
    )
    coherence_bus_in: str = setting(
        "tcp://127.0.0.1:5560",
        "RTBFLEET_COHERENCE_BUS_IN",
        "coherence bus proxy's XSUB side",
        zmq_endpoint,
    )
    coherence_bus_out: str = setting(
        "tcp://127.0.0.1:5561",
        "RTBFLEET_COHERENCE_BUS_OUT",
        "coherence bus proxy's XPUB side",
        zmq_endpoint,
    )
    event_partitions: int = setting(
        64, "RTBFLEET_EVENT_PARTITIONS", "event bus partitions (fixed for a fleet)", positive
    )
    log_level: str = setting("INFO", "RTBFLEET_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")
    log_json: bool = setting(False, "RTBFLEET_LOG_JSON", "structured JSON logs (production)")
    clock_scale: float = setting(
        1.0,
        "RTBFLEET_CLOCK_SCALE",
        "fleet seconds per real second (1: fleet time is wall time; a simulation compresses it)",
        scale_check,
    )
    clock_origin: str = setting(
        "",
        "RTBFLEET_CLOCK_ORIGIN",
        "wall time (ISO 8601 or Unix seconds) at which the fleet clock reads "
        "RTBFLEET_CLOCK_START; empty: the epoch",
        instant_check,
    )
    clock_start: str = setting(
        "",
        "RTBFLEET_CLOCK_START",
        "fleet time at RTBFLEET_CLOCK_ORIGIN (ISO 8601 or Unix seconds); empty: the origin itself",
        instant_check,
    )

    # -- notice URLs: the bidder signs them, the tracker verifies them; both read these -----------
    tracker_url: str = setting(
        "http://127.0.0.1:8090",
        "RTBFLEET_TRACKER_URL",
        "base URL of the tracker (notice, impression and click URLs)",
        http_origin,
    )
    signing_key: str = setting(
        "",
        "RTBFLEET_SIGNING_KEY",
        "key signing notice URLs (at least 16 bytes; rtbfleet up: empty keeps one in data_dir)",
        _signing_key,
    )
    previous_signing_keys: tuple[str, ...] = setting(
        (),
        "RTBFLEET_SIGNING_KEYS_PREVIOUS",
        "keys that signed before the current one and still verify (comma-separated)",
        _signing_keys,
    )
    user_key_secret: str = setting(
        "",
        "RTBFLEET_USER_KEY_SECRET",
        "secret of the user keys (keyed hashes of device ids: frequency counters, attribution) "
        "and click ids; empty: the signing key (set it before rotating signing keys, or "
        "frequency counts and device matching restart)",
    )

    def validate(self) -> None:
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError("RTBFLEET_LOG_LEVEL", f"{self.log_level!r} is not a log level")
        if self.event_partitions > 10**4:
            raise SettingsError("RTBFLEET_EVENT_PARTITIONS", "must be at most 10000 (4 digits)")
        try:
            self.memcached_servers  # noqa: B018 -- parsed here so that a bad list fails at start
        except ValueError:
            raise SettingsError(
                "RTBFLEET_MEMCACHED", f"{self.memcached!r} is not host:port[,host:port...]"
            ) from None

    def require_signing_key(self, allow_dev_variable: str, allow_dev: bool) -> None:
        """Raise unless a signing key is set or ``allow_dev`` (the service's
        ``allow_dev_variable``) lets the well-known development key stand in."""
        if not self.signing_key and not allow_dev:
            raise SettingsError(
                "RTBFLEET_SIGNING_KEY",
                f"is required (at least {MIN_SIGNING_KEY_BYTES} bytes; {allow_dev_variable}=1 "
                "for the development key)",
            )

    @property
    def signing_key_bytes(self) -> bytes:
        """The key that signs (the development key when none is set)."""
        return (self.signing_key or DEV_SIGNING_KEY).encode()

    @property
    def previous_signing_key_bytes(self) -> tuple[bytes, ...]:
        return tuple(key.encode() for key in self.previous_signing_keys)

    @property
    def user_key_secret_bytes(self) -> bytes:
        """The secret of user keys and click ids: the bidder's and the tracker's must agree."""
        return self.user_key_secret.encode() if self.user_key_secret else self.signing_key_bytes

    def clock(self) -> FleetClock:
        """The fleet clock these settings describe (wall time by default)."""
        return FleetClock.from_settings(self.clock_scale, self.clock_origin, self.clock_start)

    @property
    def memcached_servers(self) -> tuple[tuple[str, int], ...]:
        servers = []
        for part in self.memcached.split(","):
            host, _, p = part.strip().rpartition(":")
            if part.strip():
                servers.append((host or "127.0.0.1", int(p)))
        return tuple(servers)
