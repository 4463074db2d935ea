"""The bid logger's exception tree.

BidloggerError
├── PartitionSpecError  a partition set that cannot be parsed (bad configuration)
├── SpoolError          the on-disk spool cannot be written or read (local disk)
├── StoreError          Postgres refused or could not be reached (upstream; batches wait)
└── ObjectStoreError    the object store refused an upload (upstream; files wait on disk)
"""

from __future__ import annotations


class BidloggerError(Exception):
    """Base of every error raised by bidlogger/."""


class PartitionSpecError(BidloggerError, ValueError):
    """Bad configuration: a partition set such as ``0-15,32`` that does not parse or fit."""


class SpoolError(BidloggerError):
    """The spool directory cannot be written or holds a file that cannot be read."""


class StoreError(BidloggerError):
    """Postgres is unavailable or refused a batch; the batch stays in the spool."""


class BatchRejected(StoreError):
    """Postgres refused the batch's content (a value out of range, a constraint): retrying
    cannot help, so the batch is moved out of the spool's way and its events counted lost.
    ``events``: how many (when the raiser knows the batch)."""

    def __init__(self, message: str, *, events: int = 0) -> None:
        super().__init__(message)
        self.events = events


class ObjectStoreError(BidloggerError):
    """An upload to the object store failed; the file stays in the outbox."""
