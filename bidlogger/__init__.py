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
