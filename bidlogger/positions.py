"""Bus positions: what a logger has consumed of each (publisher, topic) stream, and the losses
the sequence numbers reveal. Pure: plain data in, plain data out."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


class Position(msgspec.Struct, array_like=True, frozen=True):
    """The last message of one (publisher, topic) stream folded into a batch."""

    publisher_id: str
    topic: str
    incarnation: int
    seq: int
    total: int


class Loss(msgspec.Struct, array_like=True, frozen=True):
    """``events`` the logger knows it did not count. Causes: ``gap`` (lost on the bus while we
    listened), ``restart`` (sent while this logger was down or not yet flushed when it stopped),
    ``publisher_restart`` (a publisher's new life began before we heard it), ``spool_full``."""

    cause: str
    publisher_id: str
    topic: str
    events: int


@dataclass
class Positions:
    """Bus positions this logger has consumed, and the losses the sequence numbers reveal.

    ``persisted`` holds the positions of the last batch spooled before a restart. The first data
    message of a stream in this run is compared with it: everything between is what the restart
    lost (the unflushed window and the downtime), counted exactly from the payload totals. Later
    messages are compared with the previous one (gaps on the bus); a publisher's new incarnation
    starts again from 0.
    """

    persisted: dict[tuple[str, str], Position] = field(default_factory=dict)
    current: dict[tuple[str, str], Position] = field(default_factory=dict)
    dirty: set[tuple[str, str]] = field(default_factory=set)
    losses: list[Loss] = field(default_factory=list)

    def observe(
        self, publisher_id: str, topic: str, incarnation: int, seq: int, total: int, count: int
    ) -> None:
        key = (publisher_id, topic)
        before = total - count
        previous = self.current.get(key)
        if previous is None:
            previous = self.persisted.pop(key, None)
            if previous is None:
                before = 0  # a stream we never held: its history predates this logger
            cause = "restart"
        else:
            cause = "gap"
        if previous is not None:
            if previous.incarnation == incarnation:
                before -= previous.total
            else:
                cause = "publisher_restart"
        if before > 0:
            self.losses.append(Loss(cause, publisher_id, topic, before))
        if previous is None or previous.incarnation != incarnation or seq > previous.seq:
            self.current[key] = Position(publisher_id, topic, incarnation, seq, total)
            self.dirty.add(key)

    def take_dirty(self) -> list[Position]:
        out = [self.current[key] for key in self.dirty]
        self.dirty.clear()
        return out

    def take_losses(self) -> list[Loss]:
        out, self.losses = self.losses, []
        return out

    def snapshot(self) -> list[Position]:
        """Everything known: this run's positions over those persisted and not yet heard."""
        merged = dict(self.persisted)
        merged.update(self.current)
        return list(merged.values())
