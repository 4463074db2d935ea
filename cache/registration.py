"""The config watcher of the cache package, as ``rtbfleet up`` and ``rtbfleet run
cache-watcher`` know it (see fleet.registry).

Imports nothing but the registry: the kernel reads this without loading the cache."""

from fleet.registry import Service

SERVICE = Service(
    name="cache-watcher",
    module="cache",
    args=("watcher",),
    settings="cache.settings:CacheSettings",
    order=10,
    description="config_changed notifications to invalidations on the coherence bus",
)
