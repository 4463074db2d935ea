"""Where pacing state and leases live in the cache: the ``pacing`` namespace.

    cache.register(pacing_namespace(holder))        # the bidder: its own lease key is hot
    state = cache.peek(PACING_NAMESPACE, STATE_KEY)             # PacingState | None
    leases = cache.peek(PACING_NAMESPACE, lease_key(holder))   # HolderLeases | None

The pacer ``put``s both every step; values are clock-versioned (microseconds of wall time,
never going back), shared through memcached and broadcast on the coherence bus, so a bidder
reads them from L1. There is nothing to load from Postgres: a key nobody has put yet is None,
and the gate treats None as "no lease" (fail closed).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from cache.namespace import Loaded, Namespace
from pacing.gate.leases import HolderLeases, HolderReport, PacingState

PACING_NAMESPACE: Final = "pacing"
STATE_KEY: Final = "state"
_LEASE_PREFIX: Final = "lease:"


def lease_key(holder: str) -> str:
    return _LEASE_PREFIX + holder


async def _nothing(key: str) -> Loaded[Any]:
    del key
    return Loaded(None)


def pacing_namespace(holder: str | None = None, *, ttl: float = 3600.0) -> Namespace[Any]:
    """The namespace, with the state (and ``holder``'s leases) hot: warmed before a bidder is
    ready and taking every fill the pacer broadcasts. ``ttl`` is long: values are replaced by
    the pacer's puts every few seconds, and their own timestamps say when they are stale."""
    hot = (STATE_KEY,) if holder is None else (STATE_KEY, lease_key(holder))
    return Namespace(
        PACING_NAMESPACE,
        _nothing,
        type=PacingState | HolderLeases | None,
        ttl=ttl,
        max_stale=0.0,
        hot=hot,
        versioning="clock",
    )


# Bidder processes publish their HolderReport on the coherence bus under this topic, with the
# holder name as their publisher id (the bus's heartbeats then say which holders are alive).
REPORT_TOPIC: Final = "co.pacing.report"

_report_encoder = msgspec.msgpack.Encoder()
_report_decoder = msgspec.msgpack.Decoder(HolderReport)


def encode_report(report: HolderReport) -> bytes:
    return _report_encoder.encode(report)


def decode_report(data: bytes) -> HolderReport:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bytes that are not a report."""
    return _report_decoder.decode(data)
