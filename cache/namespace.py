"""What a namespace is: its loader (L3) and its policy. Plain data, given to ``Cache.register``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cache.codec import check_namespace
from cache.versions import Versioning

T = TypeVar("T")


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """What a loader returns: the value (None: "there is nothing", cached like any value) and
    its version (required for ``source`` namespaces; ``clock`` namespaces may leave it None)."""

    value: T
    version: int | None = None


Loader = Callable[[str], Awaitable[Loaded[T]]]


@dataclass(frozen=True)
class Namespace(Generic[T]):
    """One kind of cached value.

    - ``loader(key)``: the L3 load (a Postgres query or a computation); a counter namespace may
      have none (a missing counter is 0).
    - ``type``: what values decode to from msgpack (a msgspec Struct, ``int``, ``dict[str, int]``).
    - ``ttl``/``max_stale``/``max_entries``: override the settings' defaults.
    - ``hot``: keys loaded by ``Cache.warm`` before the process is ready, kept refreshed and never
      evicted, and refilled at once after an invalidation.
    - ``versioning``: ``source`` when the loader returns the value's version (config rows),
      ``clock`` to stamp loads and puts with the wall clock.
    - ``shared``: use L2 and the fleet-wide lease (False: per-process values, L1 + L3 only).
    - ``broadcast``: announce fills on the coherence bus (waiters on the lease wake at once, and
      processes holding an older copy take the new one).
    - ``counter``: values are integers counted in memcached (``Cache.incr``); the count is the
      version.
    """

    name: str
    loader: Loader[T] | None = None
    type: Any = Any
    ttl: float | None = None
    max_stale: float | None = None
    max_entries: int | None = None
    hot: tuple[str, ...] = ()
    versioning: Versioning = "source"
    shared: bool = True
    broadcast: bool = True
    counter: bool = False

    def __post_init__(self) -> None:
        check_namespace(self.name)
        if self.versioning not in ("source", "clock"):
            raise ValueError(f"{self.name}: versioning must be 'source' or 'clock'")
        if self.loader is None and not self.counter:
            raise ValueError(f"{self.name}: a namespace needs a loader (or counter=True)")
        if self.counter and self.versioning != "source":
            raise ValueError(f"{self.name}: a counter's version is its count")
        for value, what in ((self.ttl, "ttl"), (self.max_entries, "max_entries")):
            if value is not None and value <= 0:
                raise ValueError(f"{self.name}: {what} must be greater than 0")
        if self.max_stale is not None and self.max_stale < 0:
            raise ValueError(f"{self.name}: max_stale must be 0 or more")
        if isinstance(self.hot, str):
            raise TypeError(f"{self.name}: hot is a tuple of keys, not a string")
