"""The cache's exception tree.

    CacheError
    ├── UnknownNamespace   a namespace was used before it was registered (caller's bug)
    ├── LoadError          the L3 loader failed or timed out (upstream: Postgres or a computation)
    ├── CodecError         bytes from memcached or the bus that cannot be decoded (upstream)
    ├── L2Unavailable      memcached is down or timed out (upstream; the cache runs on L1 + L3)
    ├── WarmError          hot keys could not be loaded before the process reports ready
    └── WatcherError       the config watcher cannot run (configuration or upstream)

Nothing on the bid path raises: ``peek`` returns a value or None. Only ``get``, ``put``,
``invalidate`` and ``warm``, which callers off the hot path await, raise these.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of every error raised by cache/."""


class UnknownNamespace(CacheError, KeyError):
    """The caller's bug: ``register`` the namespace before using it."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.namespace = namespace

    def __str__(self) -> str:
        return f"cache namespace {self.namespace!r} is not registered"


class LoadError(CacheError):
    """Upstream: the namespace's loader raised or timed out for ``key``."""

    def __init__(self, namespace: str, key: str, reason: str) -> None:
        super().__init__(f"{namespace}/{key}: {reason}")
        self.namespace = namespace
        self.key = key
        self.reason = reason


class CodecError(CacheError):
    """Upstream: a record or bus message that cannot be decoded (another version, corruption)."""


class L2Unavailable(CacheError):
    """Upstream: memcached is down, refused or timed out; the L2 adapter retries in background."""


class WarmError(CacheError):
    """Hot keys that could not be loaded: ``failed`` maps ``namespace/key`` to the reason."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"cache warm-up failed for {len(failed)} key(s): {shown}{more}")


class WatcherError(CacheError):
    """The config watcher cannot run: no Postgres DSN, or a setting it needs is missing."""
