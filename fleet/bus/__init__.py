"""ZMQ bus primitives shared by the event bus and the coherence bus.

Many publishers reach many subscribers through an XSUB/XPUB proxy (fleet/proxy.py): publishers
connect to the proxy's "in" endpoint, subscribers to its "out" endpoint.

Wire format, one ZMQ message of three frames::

    [topic (utf-8), header, body]
    header = struct "<BBQQQd" (version, kind, incarnation, seq, total, sent_at) + publisher id
    body   = msgpack array of bin: the batch of payloads (empty for heartbeats and goodbyes)

Invariants the subscriber relies on:

- ``seq`` counts messages per (publisher incarnation, topic) from 1 without holes, so a subscriber
  to only some prefixes sees no false gaps. A batch the publisher could not hand to ZMQ (high-water
  mark) still consumes its ``seq``: the drop shows up downstream as a gap.
- ``total`` is the running count of payloads on that topic including this message, so the size of
  a gap is known exactly in payloads, not only in messages.
- A heartbeat repeats a topic's last ``seq``/``total``: a lost tail is found within one interval.
- ``incarnation`` is random per Publisher: a restarted publisher starts again at seq 1 and is
  reported as a restart, never as a gap. A goodbye (``close()``) makes subscribers forget a
  publisher, so a clean shutdown is neither silence nor a restart.

Subscribers receive these facts in-band, in order with the data, as :class:`Delivery` objects of
kind ``gap``, ``restart`` and ``silent``, so that a cache can drop what that publisher could have
invalidated.

Modules: ``protocol`` (the pure core: wire format and :class:`SequenceTracker`), ``publisher``
and ``subscriber`` (the asyncio/ZMQ adapters), ``sockets`` (socket options, metrics, errors).

Errors (all :class:`fleet.errors.BusError`): ``BusError`` itself when an endpoint cannot be bound
or connected (upstream), :class:`BusClosedError` when used after ``close()`` (caller),
:class:`WireError` for a message not in this format (bad input; subscribers skip and count it).
"""

from fleet.bus.protocol import Delivery, DeliveryKind, SequenceTracker, WireError
from fleet.bus.publisher import Publisher, PublisherStats
from fleet.bus.sockets import BusClosedError, BusMetrics, configure_socket
from fleet.bus.subscriber import Subscriber, SubscriberStats

__all__ = [
    "BusClosedError",
    "BusMetrics",
    "Delivery",
    "DeliveryKind",
    "Publisher",
    "PublisherStats",
    "SequenceTracker",
    "Subscriber",
    "SubscriberStats",
    "WireError",
    "configure_socket",
]
