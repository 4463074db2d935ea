"""The cache: L1 in-process, L2 memcached, L3 loaders (Postgres or computations), kept coherent
over the ZMQ coherence bus; the config watcher that turns database changes into invalidations.

    from cache import Cache, CacheSettings, config_namespace

    cache = Cache(CacheSettings.from_env(), registry=registry)
    cache.register(config_namespace(pool))
    await cache.start()
    await cache.warm()
    snapshot = cache.peek("config", "snapshot")   # never waits; None on a miss (a fill starts)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cache.app import Cache, default_origin
    from cache.changes import Change, KeyMap, default_keys
    from cache.counters import CounterRegion
    from cache.errors import (
        CacheError,
        CodecError,
        L2Unavailable,
        LoadError,
        UnknownNamespace,
        WarmError,
        WatcherError,
    )
    from cache.loaders import (
        CONFIG_NAMESPACE,
        SNAPSHOT_KEY,
        config_namespace,
        snapshot_loader,
    )
    from cache.namespace import Loaded, Loader, Namespace
    from cache.region import Listener, Region
    from cache.settings import CacheSettings
    from cache.watcher import Watcher, run_watcher

# Submodules load on first use, so that reading the settings (cache.settings) does not import
# prometheus_client: a forking server must set up multiprocess mode before that import.
_MODULES = {
    "Cache": "cache.app",
    "default_origin": "cache.app",
    "Change": "cache.changes",
    "KeyMap": "cache.changes",
    "default_keys": "cache.changes",
    "CounterRegion": "cache.counters",
    "CacheError": "cache.errors",
    "CodecError": "cache.errors",
    "L2Unavailable": "cache.errors",
    "LoadError": "cache.errors",
    "UnknownNamespace": "cache.errors",
    "WarmError": "cache.errors",
    "WatcherError": "cache.errors",
    "CONFIG_NAMESPACE": "cache.loaders",
    "SNAPSHOT_KEY": "cache.loaders",
    "config_namespace": "cache.loaders",
    "snapshot_loader": "cache.loaders",
    "Loaded": "cache.namespace",
    "Loader": "cache.namespace",
    "Namespace": "cache.namespace",
    "Listener": "cache.region",
    "Region": "cache.region",
    "CacheSettings": "cache.settings",
    "Watcher": "cache.watcher",
    "run_watcher": "cache.watcher",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CONFIG_NAMESPACE",
    "SNAPSHOT_KEY",
    "Cache",
    "CacheError",
    "CacheSettings",
    "Change",
    "CodecError",
    "CounterRegion",
    "KeyMap",
    "L2Unavailable",
    "Listener",
    "LoadError",
    "Loaded",
    "Loader",
    "Namespace",
    "Region",
    "UnknownNamespace",
    "WarmError",
    "Watcher",
    "WatcherError",
    "config_namespace",
    "default_keys",
    "default_origin",
    "run_watcher",
    "snapshot_loader",
]
