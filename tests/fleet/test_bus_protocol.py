"""The bus protocol core: wire format and sequence bookkeeping, with plain data (no sockets)."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.bus.protocol import (
    KIND_BYE,
    KIND_DATA,
    KIND_HEARTBEAT,
    Delivery,
    Header,
    SequenceTracker,
    WireError,
    decode_body,
    decode_header,
    encode_body,
    encode_header,
)

TIMEOUT = 3.0


def tracker(grace: float = 0.0, started_at: float = 0.0, forget: float = 60.0) -> SequenceTracker:
    return SequenceTracker(
        silence_timeout=TIMEOUT, join_grace=grace, forget_after=forget, started_at=started_at
    )


def data(seq: int, total: int, pid: str = "p1", inc: int = 1) -> Header:
    return Header(KIND_DATA, inc, seq, total, 1000.0 + seq, pid)


def beat(seq: int, total: int, pid: str = "p1", inc: int = 1, kind: int = KIND_HEARTBEAT) -> Header:
    return Header(kind, inc, seq, total, 2000.0 + seq, pid)


def kinds(notices: list[Delivery] | None) -> list[str]:
    return [n.kind for n in notices or []]


# -- wire format -----------------------------------------------------------------------------


def test_header_round_trip() -> None:
    raw = encode_header(KIND_DATA, 2**64 - 1, 7, 1234, 1_732_000_000.5, "bidder-ü".encode())
    assert decode_header(raw) == Header(KIND_DATA, 2**64 - 1, 7, 1234, 1_732_000_000.5, "bidder-ü")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "too short"),
        (encode_header(KIND_DATA, 1, 1, 1, 0.0, b"")[:-1], "too short"),
        (b"\x02" + encode_header(KIND_DATA, 1, 1, 1, 0.0, b"p")[1:], "wire version 2"),
        (struct.pack("<BBQQQd", 1, 9, 1, 1, 1, 0.0) + b"p", "unknown message kind 9"),
        (encode_header(KIND_DATA, 1, 1, 1, 0.0, b"\xff\xfe"), "not utf-8"),
    ],
)
def test_bad_headers_are_wire_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode_header(raw)


def test_body_round_trip_keeps_bytes_exactly() -> None:
    payloads = [b"", b"\x00\xff" * 100, b"x" * 70_000]
    assert decode_body(encode_body(payloads)) == payloads
    assert decode_body(encode_body([])) == []


@pytest.mark.parametrize(
    "raw", [b"", b"\xc1", msgspec.msgpack.encode(5), msgspec.msgpack.encode(["text"])]
)
def test_bad_bodies_are_wire_errors(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode_body(raw)


def test_delivery_is_immutable() -> None:
    d = Delivery("data", "ev.0001.bid", "p1", 1, [b"x"], 1.0)
    with pytest.raises(AttributeError):
        d.seq = 2  # type: ignore[misc]


# -- sequences -------------------------------------------------------------------------------


def test_in_order_stream_has_no_notices() -> None:
    t = tracker()
    assert t.observe("ev.0001.bid", data(1, 2), 2, 1.0) is None
    assert t.observe("ev.0001.bid", data(2, 5), 3, 1.1) is None
    assert t.observe("ev.0001.bid", beat(2, 5), 0, 1.2) is None
    assert t.observe("ev.0001.bid", data(3, 6), 1, 1.3) is None


def test_lost_batch_is_a_gap_counted_in_payloads() -> None:
    t = tracker()
    t.observe("ev.0001.bid", data(1, 2), 2, 1.0)
    # seq 2 (3 payloads) and seq 3 (4 payloads) were lost; seq 4 carries 1
    notices = t.observe("ev.0001.bid", data(4, 10), 1, 1.1)
    assert notices == [Delivery("gap", "ev.0001.bid", "p1", 4, [], 1004.0, 1, expected=2, missed=7)]
    assert t.observe("ev.0001.bid", data(5, 11), 1, 1.2) is None


def test_heartbeat_reveals_a_lost_tail_once() -> None:
    t = tracker()
    t.observe("co.cache.users", data(1, 1), 1, 1.0)
    notices = t.observe("co.cache.users", beat(3, 4), 0, 2.0)
    assert notices is not None
    (gap,) = notices
    assert (gap.kind, gap.expected, gap.seq, gap.missed) == ("gap", 2, 4, 3)
    assert t.observe("co.cache.users", beat(3, 4), 0, 3.0) is None


def test_sequences_are_per_topic() -> None:
    t = tracker()
    for seq in (1, 2, 3):
        assert t.observe("ev.0001.bid", data(seq, seq), 1, 1.0) is None
        assert t.observe("ev.0002.bid", data(seq, seq), 1, 1.0) is None
    # a subscriber to only ev.0002. never sees ev.0001.* and still sees no gap
    t2 = tracker()
    for seq in (1, 2, 3):
        assert t2.observe("ev.0002.bid", data(seq, seq), 1, 1.0) is None


def test_joining_mid_stream_within_grace_is_not_a_gap() -> None:
    t = tracker(grace=TIMEOUT, started_at=100.0)
    assert t.observe("ev.0003.win", data(57, 300), 4, 101.0) is None
    assert t.observe("ev.0004.win", beat(12, 40), 0, 102.9) is None
    assert t.observe("ev.0003.win", data(58, 301), 1, 103.5) is None


def test_stream_first_seen_mid_sequence_after_grace_is_a_gap_from_one() -> None:
    t = tracker(grace=TIMEOUT, started_at=100.0)
    notices = t.observe("ev.0003.win", data(3, 9), 2, 104.0)
    assert notices is not None
    (gap,) = notices
    assert (gap.expected, gap.seq, gap.missed) == (1, 3, 7)
    first_heard_by_heartbeat = t.observe("ev.0005.win", beat(2, 2), 0, 104.0)
    assert first_heard_by_heartbeat is not None
    assert (first_heard_by_heartbeat[0].expected, first_heard_by_heartbeat[0].seq) == (1, 3)


def test_restart_is_reported_but_is_not_a_gap() -> None:
    t = tracker()
    for seq in range(1, 51):
        t.observe("co.cache.users", data(seq, seq, inc=111), 1, 1.0)
    notices = t.observe("co.cache.users", data(1, 1, inc=222), 1, 2.0)
    assert kinds(notices) == ["restart"]
    assert notices is not None and notices[0].incarnation == 222
    assert t.observe("co.cache.users", data(2, 2, inc=222), 1, 2.1) is None


def test_restart_whose_first_messages_were_lost_is_a_restart_and_a_gap() -> None:
    t = tracker()
    t.observe("co.cache.users", data(1, 1, inc=111), 1, 1.0)
    notices = t.observe("co.cache.users", data(3, 3, inc=222), 1, 2.0)
    assert kinds(notices) == ["restart", "gap"]
    assert notices is not None and (notices[1].expected, notices[1].seq) == (1, 3)


def test_goodbye_forgets_the_publisher_so_it_is_neither_silent_nor_restarted() -> None:
    t = tracker()
    t.observe("co.a", data(1, 1), 1, 1.0)
    t.observe("co.b", data(1, 1), 1, 1.0)
    assert t.observe("co.a", beat(1, 1, kind=KIND_BYE), 0, 1.5) is None
    assert t.known() == {"p1": False}  # still has co.b
    assert t.observe("co.b", beat(1, 1, kind=KIND_BYE), 0, 1.5) is None
    assert t.known() == {}
    assert t.check_silence(100.0) == []
    assert t.observe("co.a", data(1, 1, inc=2), 1, 101.0) is None


def test_goodbye_reveals_a_lost_tail() -> None:
    t = tracker()
    t.observe("co.a", data(1, 1), 1, 1.0)
    assert kinds(t.observe("co.a", beat(2, 5, kind=KIND_BYE), 0, 1.1)) == ["gap"]


def test_silence_is_reported_once_until_heard_again() -> None:
    t = tracker()
    t.observe("co.a", data(1, 1), 1, 10.0)
    t.observe("co.a", data(1, 1, pid="p2"), 1, 12.0)
    assert t.check_silence(10.0 + TIMEOUT) == []  # exactly the timeout: not yet
    silent = t.check_silence(13.5)
    assert [(n.kind, n.publisher_id, n.sent_at) for n in silent] == [("silent", "p1", 1001.0)]
    assert t.check_silence(14.0) == []
    assert t.known() == {"p1": True, "p2": False}
    t.observe("co.a", beat(1, 1), 0, 14.5)
    assert t.known()["p1"] is False
    assert [n.publisher_id for n in t.check_silence(16.0)] == ["p2"]
    assert [n.publisher_id for n in t.check_silence(18.0)] == ["p1"]


def test_silent_publishers_are_forgotten_after_forget_after() -> None:
    t = tracker(forget=30.0)
    t.observe("co.a", data(5, 5), 1, 0.0)
    assert len(t.check_silence(4.0)) == 1
    t.check_silence(29.0)
    assert "p1" in t.known()
    t.check_silence(31.0)
    assert t.known() == {}


def test_stale_sequence_numbers_neither_regress_nor_gap() -> None:
    t = tracker()
    t.observe("co.a", data(1, 1), 1, 1.0)
    t.observe("co.a", data(2, 2), 1, 1.0)
    assert t.observe("co.a", data(2, 2), 1, 1.0) is None
    assert t.observe("co.a", beat(1, 1), 0, 1.0) is None
    assert t.observe("co.a", data(3, 3), 1, 1.0) is None


def test_tracker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        SequenceTracker(silence_timeout=0, join_grace=0, forget_after=10, started_at=0)
    with pytest.raises(ValueError):
        SequenceTracker(silence_timeout=5, join_grace=0, forget_after=1, started_at=0)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=60),
    lost=st.sets(st.integers(min_value=0, max_value=59)),
    tail_heartbeat=st.booleans(),
)
def test_every_payload_is_received_or_reported_missing(
    sizes: list[int], lost: set[int], tail_heartbeat: bool
) -> None:
    """Whatever is lost: received + missed == sent, and the gaps name exactly the lost seqs."""
    t = tracker()
    received = 0
    reported: set[int] = set()
    missed = 0
    total = 0
    for index, size in enumerate(sizes):
        seq = index + 1
        total += size
        if index in lost:
            continue
        for notice in t.observe("ev.0001.bid", data(seq, total), size, 1.0) or []:
            reported.update(range(notice.expected, notice.seq))
            missed += notice.missed
        received += size
    if tail_heartbeat:
        for notice in t.observe("ev.0001.bid", beat(len(sizes), total), 0, 2.0) or []:
            reported.update(range(notice.expected, notice.seq))
            missed += notice.missed
    lost_seqs = {i + 1 for i in lost if i < len(sizes)}
    last_received = max((i + 1 for i in range(len(sizes)) if i not in lost), default=0)
    expected_reported = lost_seqs if tail_heartbeat else {s for s in lost_seqs if s < last_received}
    assert reported == expected_reported
    unreported = sum(sizes[s - 1] for s in lost_seqs - reported)
    assert received + missed + unreported == total
