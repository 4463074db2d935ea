"""Joined examples from the learners that split the partitions to the leading learner (ZMQ).

A learner that does not lead joins its share of the event partitions itself (the memory- and
decode-heavy part) and sends what settles, examples and price observations, in parcels to the
leader's PULL socket; the leader learns them with its own. Delivery is at most once: a parcel
is sent to one leader once and never again (a PUSH socket with a bounded queue: a parcel
refused at the high-water mark, or queued for a leader that went away, is lost and counted).
Each sender numbers its parcels; the leader counts the gaps (lost on the way) and ignores a
number it has seen (never learnt twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, cast

import msgspec
import zmq
import zmq.asyncio

from fleet.bus.sockets import configure_socket, open_socket
from learner.join import Example, PriceObservation
from learner.online import OnlineLearner

RELAY_HWM: Final = 1000  # parcels queued for the leader at most
PARCEL_EXAMPLES: Final = 2_000  # examples per parcel at most
# A frame larger than this drops its sender's connection at the leader: a parcel of 2,000
# examples is well under a megabyte, and the port must not let a stray peer fill its memory.
RELAY_MAX_PARCEL_BYTES: Final = 64 << 20


class WireExample(msgspec.Struct, array_like=True, frozen=True):
    head: str
    txid: str
    features: list[str]
    label: float
    weight: float
    ts: float
    label_delay: float


class WirePrice(msgspec.Struct, array_like=True, frozen=True):
    segment: str
    kind: str
    price_micros: int


class Parcel(msgspec.Struct, array_like=True, frozen=True):
    sender: str
    seq: int
    examples: list[WireExample]
    prices: list[WirePrice]
    watermark: float  # the sender's stream time


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Parcel)


def encode_parcel(
    sender: str,
    seq: int,
    examples: list[Example],
    prices: list[PriceObservation],
    watermark: float,
) -> bytes:
    return _encoder.encode(
        Parcel(
            sender,
            seq,
            [
                WireExample(e.head, e.txid, e.features, e.label, e.weight, e.ts, e.label_delay)
                for e in examples
            ],
            [WirePrice(p.segment, p.kind, p.price_micros) for p in prices],
            watermark,
        )
    )


def decode_parcel(data: bytes) -> tuple[Parcel, list[Example], list[PriceObservation]]:
    """Raises msgspec.DecodeError (or ValidationError) on what is not a parcel."""
    parcel = _decoder.decode(data)
    examples = []
    for w in parcel.examples:
        if w.head not in ("click", "install"):
            raise msgspec.ValidationError(f"unknown head {w.head!r}")
        examples.append(
            Example(w.head, w.txid, w.features, w.label, w.weight, w.ts, w.label_delay)  # type: ignore[arg-type]
        )
    prices = []
    for p in parcel.prices:
        if p.kind not in ("exact", "below", "above"):
            raise msgspec.ValidationError(f"unknown price kind {p.kind!r}")
        prices.append(PriceObservation(p.segment, p.kind, p.price_micros))  # type: ignore[arg-type]
    return parcel, examples, prices


@dataclass(slots=True)
class Sequences:
    """The leader's view of each sender's parcel numbers: gaps are parcels lost on the way,
    a number not above the last one seen is a repeat (ignored)."""

    last: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    repeated: int = 0

    def accept(self, sender: str, seq: int) -> bool:
        last = self.last.get(sender)
        if last is not None and seq <= last:
            self.repeated += 1
            return False
        if last is not None:
            self.lost += seq - last - 1
        self.last[sender] = seq
        return True


def learn_parcels(learner: OnlineLearner, parcels: list[bytes], seen: Sequences) -> dict[str, int]:
    """The leader's side: decode each parcel, skip a repeated number, learn the rest (prices
    into the market model, examples into the heads' buffers). Parcels counted by outcome:
    received, repeated, malformed, and the parcels found lost (gaps in a sender's numbers)."""
    counts = {"received": 0, "repeated": 0, "malformed": 0, "lost": 0}
    lost = seen.lost
    for data in parcels:
        try:
            parcel, examples, prices = decode_parcel(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            counts["malformed"] += 1
            continue
        if not seen.accept(parcel.sender, parcel.seq):
            counts["repeated"] += 1
            continue
        counts["received"] += 1
        learner.observe_prices(prices)
        learner.add_examples(examples)
    counts["lost"] = seen.lost - lost
    return counts


class RelaySender:
    """A PUSH socket to the current leader; ``send`` never blocks (a full queue drops)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], sender: str) -> None:
        self._context = context
        self.sender = sender
        self.address = ""
        self.seq = 0
        self.sent = 0
        self.dropped = 0  # parcels refused at the high-water mark (their examples lost)
        self._sock: zmq.Socket[bytes] | None = None

    def connect(self, address: str) -> None:
        """Send to ``address`` from now on; what was queued for the old leader is dropped."""
        if address == self.address and self._sock is not None:
            return
        self.close()
        sock = self._context.socket(zmq.PUSH)
        configure_socket(sock, RELAY_HWM, max_message=RELAY_MAX_PARCEL_BYTES)
        open_socket(sock, address, bind=False)
        self._sock = sock
        self.address = address

    def send(
        self, examples: list[Example], prices: list[PriceObservation], watermark: float
    ) -> bool:
        if self._sock is None:
            self.dropped += 1
            return False
        self.seq += 1
        data = encode_parcel(self.sender, self.seq, examples, prices, watermark)
        try:
            self._sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def send_all(
        self, examples: list[Example], prices: list[PriceObservation], watermark: float
    ) -> tuple[int, int]:
        """What one round settled, in parcels of at most ``PARCEL_EXAMPLES`` examples (the
        prices with the first); (parcels sent, parcels dropped)."""
        sent = dropped = 0
        if not examples and not prices:
            return sent, dropped
        for a in range(0, max(len(examples), 1), PARCEL_EXAMPLES):
            chunk = examples[a : a + PARCEL_EXAMPLES]
            if self.send(chunk, prices if a == 0 else [], watermark):
                sent += 1
            else:
                dropped += 1
        return sent, dropped

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; ``linger_ms``: how long queued parcels may still go out (a clean
        stop gives its last parcels a moment; a change of leader drops them)."""
        if self._sock is not None:
            self._sock.close(linger=linger_ms)
            self._sock = None
        self.address = ""


class RelayReceiver:
    """The leader's PULL socket, bound while it leads (read on the event loop)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], bind: str) -> None:
        self._context = zmq.asyncio.Context.shadow(context)
        self._sock = self._context.socket(zmq.PULL)
        plain = cast("zmq.Socket[bytes]", self._sock)
        configure_socket(plain, RELAY_HWM, max_message=RELAY_MAX_PARCEL_BYTES)
        open_socket(plain, bind, bind=True)
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    async def recv(self) -> bytes:
        data: bytes = await self._sock.recv()
        return data

    def close(self) -> None:
        self._sock.close(linger=0)
