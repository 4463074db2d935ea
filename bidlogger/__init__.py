"""Bid loggers: consistent partition samples of the event stream, aggregated into Postgres and
kept raw in a columnar store.

    from bidlogger import BidLogger, BidloggerSettings

    settings = BidloggerSettings.from_env()          # RTBFLEET_BIDLOGGER_PARTITIONS=0-15 ...
    logger = BidLogger(settings, dsn, registry=registry)
    await logger.start()
    ...
    await logger.close()

Modules: ``aggregate`` (the pure core), ``partitions``, ``settings``; adapters ``store``
(Postgres), ``spool`` (local disk), ``parquet`` (segments and files), ``objectstore`` (S3 or a
directory), ``maintenance`` (roll-ups, retention, the creative feed); ``service`` and ``app``
for wiring; ``metrics``; ``errors``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bidlogger.aggregate import Aggregator, Batch, BidJoin
    from bidlogger.errors import (
        BatchRejected,
        BidloggerError,
        ObjectStoreError,
        PartitionSpecError,
        SpoolError,
        StoreError,
    )
    from bidlogger.positions import Loss, Position, Positions
    from bidlogger.service import BidLogger
    from bidlogger.settings import BidloggerSettings

# Submodules load on first use, so that reading the registry (bidlogger.registration) loads
# neither the settings nor the service.
_MODULES = {
    "Aggregator": "bidlogger.aggregate",
    "Batch": "bidlogger.aggregate",
    "BidJoin": "bidlogger.aggregate",
    "BatchRejected": "bidlogger.errors",
    "BidloggerError": "bidlogger.errors",
    "ObjectStoreError": "bidlogger.errors",
    "PartitionSpecError": "bidlogger.errors",
    "SpoolError": "bidlogger.errors",
    "StoreError": "bidlogger.errors",
    "Loss": "bidlogger.positions",
    "Position": "bidlogger.positions",
    "Positions": "bidlogger.positions",
    "BidLogger": "bidlogger.service",
    "BidloggerSettings": "bidlogger.settings",
}

__all__ = [
    "Aggregator",
    "Batch",
    "BatchRejected",
    "BidJoin",
    "BidLogger",
    "BidloggerError",
    "BidloggerSettings",
    "Loss",
    "ObjectStoreError",
    "PartitionSpecError",
    "Position",
    "Positions",
    "SpoolError",
    "StoreError",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
