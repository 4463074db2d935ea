"""What every bus socket shares: options, opening, errors and Prometheus counters."""

from __future__ import annotations

import weakref
from typing import Final

import zmq
from prometheus_client import CollectorRegistry, Counter

from fleet.errors import BusError

ZMTP_HEARTBEAT_MS = 2_000  # transport keep-alive: dead peers are disconnected, not queued for
ZMTP_TIMEOUT_MS = 10_000

# The largest frame a bus socket accepts from a peer (ZMQ_MAXMSGSIZE): a peer that sends a larger
# one is disconnected before the frame is allocated, so a stray or hostile peer on a bus port
# cannot make the process allocate what it announces (up to 2^64 bytes).
#
# Data frames (subscribers, the proxy's XSUB side): the largest is a batch's body, a msgpack array
# of up to ``batch_max`` payloads (256 by default, 1,024 in the benchmarks). An event is 100 to
# 300 bytes, a bid event with many features about a kilobyte, so a full batch of 1,024 is at most
# about 1 MiB. On the coherence bus a fill carries a value of at most
# RTBFLEET_CACHE_BUS_VALUE_MAX_BYTES (256 KB by default) and a bidder's pacing report at most 64
# bytes per campaign (five int maps): 1.3 MB at 20,000 campaigns, the largest single payload
# either bus carries. 16 MiB is over ten times each. The publisher splits a batch whose body would
# be larger and refuses (counts as dropped) a payload that alone is: it never sends what its
# receivers would disconnect it for.
BUS_MAX_MESSAGE: Final = 16 << 20
# Subscription frames (XPUB sockets: the proxy's "out" side, a publisher): a topic prefix and its
# framing (one byte, or ten for the SUBSCRIBE command a ZMTP 3.1 SUB sends). Our prefixes are under
# 64 bytes (``ev.0007.bid``, ``co.cache.<namespace of at most 48>``, ``co.pacing.report``); a
# Subscriber refuses one over BUS_MAX_PREFIX, and 4 KiB leaves room for four times that.
BUS_MAX_PREFIX: Final = 1 << 10
BUS_MAX_SUBSCRIPTION: Final = 4 << 10


class BusClosedError(BusError):
    """The caller used a publisher or subscriber after ``close()``."""


def configure_socket(sock: zmq.Socket[bytes], hwm: int, *, max_message: int) -> None:
    """High-water marks and transport heartbeats every bus socket (and the proxy) uses, and
    ``max_message``: the largest frame, in bytes, the socket accepts from a peer (a peer that
    sends a larger one is disconnected; see BUS_MAX_MESSAGE). There is no unbounded value."""
    if max_message < 1:
        raise ValueError("max_message must be at least 1 byte")
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.HEARTBEAT_IVL, ZMTP_HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ZMTP_TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)


def open_socket(sock: zmq.Socket[bytes], endpoint: str, bind: bool) -> None:
    """Bind or connect; on failure close the socket and raise BusError naming the endpoint."""
    try:
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        verb = "bind" if bind else "connect to"
        raise BusError(f"cannot {verb} {endpoint}: {exc}") from exc


class BusMetrics:
    """Prometheus counters of the bus, labelled by endpoint."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["endpoint"], registry=registry)

        self.sent_messages = counter("fleet_bus_sent_messages_total", "Bus messages sent")
        self.sent_payloads = counter("fleet_bus_sent_payloads_total", "Payloads sent in them")
        self.dropped_payloads = counter(
            "fleet_bus_dropped_payloads_total",
            "Payloads dropped at the publisher (high-water mark)",
        )
        self.heartbeats = counter("fleet_bus_heartbeats_total", "Heartbeats sent")
        self.received_messages = counter("fleet_bus_received_messages_total", "Messages received")
        self.received_payloads = counter("fleet_bus_received_payloads_total", "Payloads received")
        self.gaps = counter("fleet_bus_sequence_gaps_total", "Sequence gaps seen by subscribers")
        self.missed_payloads = counter(
            "fleet_bus_missed_payloads_total", "Payloads lost in sequence gaps"
        )
        self.silent = counter(
            "fleet_bus_silent_publishers_total", "Publishers that fell silent past the timeout"
        )
        self.restarts = counter(
            "fleet_bus_publisher_restarts_total", "Publishers seen again with a new incarnation"
        )
        self.invalid = counter(
            "fleet_bus_invalid_messages_total", "Messages that were not in the bus wire format"
        )


_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, BusMetrics] = (
    weakref.WeakKeyDictionary()
)


def metrics_for(registry: CollectorRegistry | None) -> BusMetrics:
    """One set of counters per registry, shared by every publisher and subscriber using it
    (a registry refuses the same metric name twice)."""
    if registry is None:
        return BusMetrics(None)
    metrics = _metrics_by_registry.get(registry)
    if metrics is None:
        metrics = _metrics_by_registry[registry] = BusMetrics(registry)
    return metrics
