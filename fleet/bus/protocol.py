"""The bus protocol core: wire format and sequence bookkeeping, with no I/O and no clock.

The publisher and subscriber modules move these bytes over ZMQ; everything that decides what a
message means lives here, so it can be tested with plain data. Time (``now``) is passed in by the
caller: any monotonic clock, as long as one tracker always gets the same one.

Stream state per (publisher, topic) is (last seq, running payload total). For a data message the
state just before it is (seq - 1, total - len(payloads)); for a heartbeat or goodbye it is
(seq, total) itself. A gap is any difference between what we hold and that "state before":
the missing range is [held seq + 1, seq before + 1) and its size in payloads is the difference of
totals, exact even when whole batches were lost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

import msgspec

from fleet.errors import BusError

WIRE_VERSION: Final = 1
KIND_DATA: Final = 0
KIND_HEARTBEAT: Final = 1
KIND_BYE: Final = 2
_KINDS: Final = frozenset({KIND_DATA, KIND_HEARTBEAT, KIND_BYE})

# version, kind, incarnation, seq, total, sent_at (epoch seconds); then the publisher id (utf-8)
_HEADER: Final = struct.Struct("<BBQQQd")
_body_encoder: Final = msgspec.msgpack.Encoder()
_body_decoder: Final = msgspec.msgpack.Decoder(list[bytes])

DeliveryKind = Literal["data", "gap", "restart", "silent"]


class WireError(BusError):
    """Bad input: a message that is not in the bus wire format (skipped and counted)."""


class Header(NamedTuple):
    kind: int
    incarnation: int
    seq: int
    total: int
    sent_at: float
    publisher_id: str


def encode_header(
    kind: int, incarnation: int, seq: int, total: int, sent_at: float, publisher_id: bytes
) -> bytes:
    return _HEADER.pack(WIRE_VERSION, kind, incarnation, seq, total, sent_at) + publisher_id


def decode_header(data: bytes) -> Header:
    if len(data) <= _HEADER.size:
        raise WireError(f"header of {len(data)} bytes is too short")
    version, kind, incarnation, seq, total, sent_at = _HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version}, expected {WIRE_VERSION}")
    if kind not in _KINDS:
        raise WireError(f"unknown message kind {kind}")
    try:
        publisher_id = data[_HEADER.size :].decode()
    except UnicodeDecodeError:
        raise WireError("publisher id is not utf-8") from None
    return Header(kind, incarnation, seq, total, sent_at, publisher_id)


def encode_body(payloads: list[bytes]) -> bytes:
    return _body_encoder.encode(payloads)


def decode_body(data: bytes) -> list[bytes]:
    try:
        return _body_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise WireError(f"body is not a batch of payloads: {exc}") from None


class Delivery(msgspec.Struct, frozen=True):
    """What a subscriber hands its consumer, in arrival order.

    - ``data``: ``payloads`` of one batch; ``seq`` is its sequence number on ``topic`` and
      ``total`` the publisher's running count of payloads on it, this batch included (so a
      consumer that kept the total it last saw knows exactly how many payloads it missed).
    - ``gap``: messages [``expected``, ``seq``) of ``topic`` from ``publisher_id`` were lost,
      ``missed`` payloads in all. Whatever they said (an invalidation, a lease) is unknown.
    - ``restart``: ``publisher_id`` came back as a new ``incarnation`` without saying goodbye;
      the tail of its previous life may be lost. Not a gap: the new life starts at seq 1.
    - ``silent``: nothing heard from ``publisher_id`` for the heartbeat timeout (reported once
      until it is heard again); ``sent_at`` is the send time of the last message heard.

    Immutable (a frozen msgspec Struct: ten times cheaper to build than a frozen dataclass).
    """

    kind: DeliveryKind
    topic: str
    publisher_id: str
    seq: int
    payloads: list[bytes]
    sent_at: float
    incarnation: int = 0
    expected: int = 0
    missed: int = 0
    total: int = 0


@dataclass(slots=True)
class _Stream:
    seq: int
    total: int


@dataclass(slots=True)
class _Peer:
    incarnation: int
    last_heard: float
    last_sent_at: float
    silent: bool = False
    streams: dict[str, _Stream] = field(default_factory=dict)


class SequenceTracker:
    """Per (publisher, topic) sequence state of one subscriber: gaps, restarts and silence.

    ``started_at`` and ``now`` come from the same monotonic clock. A stream first seen within
    ``join_grace`` of ``started_at`` is taken as it is (its history predates us); one first seen
    later mid-sequence is a gap from seq 1, since we were listening when it began.
    """

    def __init__(
        self, *, silence_timeout: float, join_grace: float, forget_after: float, started_at: float
    ) -> None:
        if silence_timeout <= 0 or join_grace < 0 or forget_after < silence_timeout:
            raise ValueError("silence_timeout > 0, join_grace >= 0, forget_after >= timeout")
        self._timeout = silence_timeout
        self._join_grace = join_grace
        self._forget_after = forget_after
        self._started_at = started_at
        self._peers: dict[str, _Peer] = {}

    def known(self) -> dict[str, bool]:
        """Publisher id -> currently reported silent."""
        return {pid: peer.silent for pid, peer in self._peers.items()}

    def observe(self, topic: str, header: Header, count: int, now: float) -> list[Delivery] | None:
        """Account one message (``count`` payloads); return the notices it reveals, if any."""
        pid = header.publisher_id
        notices: list[Delivery] | None = None
        peer = self._peers.get(pid)
        if peer is None or peer.incarnation != header.incarnation:
            if peer is not None:
                notices = [Delivery("restart", "", pid, 0, [], header.sent_at, header.incarnation)]
            peer = self._peers[pid] = _Peer(header.incarnation, now, header.sent_at)
        else:
            peer.last_heard = now
            peer.last_sent_at = header.sent_at
            peer.silent = False
        if header.kind == KIND_DATA:
            before_seq, before_total = header.seq - 1, header.total - count
        else:
            before_seq, before_total = header.seq, header.total
        stream = peer.streams.get(topic)
        if stream is None:
            if now - self._started_at < self._join_grace:
                stream = _Stream(before_seq, before_total)
            else:
                stream = _Stream(0, 0)
            peer.streams[topic] = stream
        if before_seq > stream.seq:
            gap = Delivery(
                "gap",
                topic,
                pid,
                before_seq + 1,
                [],
                header.sent_at,
                header.incarnation,
                expected=stream.seq + 1,
                missed=max(0, before_total - stream.total),
            )
            notices = [gap] if notices is None else [*notices, gap]
        if header.seq > stream.seq:
            stream.seq = header.seq
            stream.total = header.total
        if header.kind == KIND_BYE:
            del peer.streams[topic]
            if not peer.streams:
                del self._peers[pid]
        return notices

    def check_silence(self, now: float) -> list[Delivery]:
        """Publishers quiet for longer than the timeout, each reported once until heard again."""
        notices: list[Delivery] = []
        forget: list[str] = []
        for pid, peer in self._peers.items():
            quiet = now - peer.last_heard
            if peer.silent:
                if quiet > self._forget_after:
                    forget.append(pid)
            elif quiet > self._timeout:
                peer.silent = True
                notices.append(
                    Delivery("silent", "", pid, 0, [], peer.last_sent_at, peer.incarnation)
                )
        for pid in forget:
            del self._peers[pid]
        return notices
