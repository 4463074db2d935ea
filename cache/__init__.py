"""The cache: L1 in-process, L2 memcached, L3 loaders (Postgres or computations), kept coherent
over the ZMQ coherence bus; the config watcher that turns database changes into invalidations.

    from cache import Cache, CacheSettings, config_namespace

    cache = Cache(CacheSettings.from_env(), registry=registry)
    cache.register(config_namespace(pool))
    await cache.start()
    await cache.warm()
    snapshot = cache.peek("config", "snapshot")   # never waits; None on a miss (a fill starts)
"""

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
    FREQUENCY_NAMESPACE,
    SNAPSHOT_KEY,
    config_namespace,
    frequency_key,
    frequency_namespace,
    snapshot_loader,
)
from cache.namespace import Loaded, Loader, Namespace
from cache.region import Listener, Region
from cache.settings import CacheSettings
from cache.watcher import Watcher, run_watcher

__all__ = [
    "CONFIG_NAMESPACE",
    "FREQUENCY_NAMESPACE",
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
    "frequency_key",
    "frequency_namespace",
    "run_watcher",
    "snapshot_loader",
]
