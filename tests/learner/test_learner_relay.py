"""The relay's wire format and the leader's count of each sender's parcel numbers."""

from __future__ import annotations

import msgspec
import pytest

from learner.join import Example, PriceObservation
from learner.relay import Sequences, decode_parcel, encode_parcel


def test_a_parcel_round_trips_examples_and_prices() -> None:
    examples = [
        Example("click", "t1", ["app=a", "country=DE"], 1.0, 1.0, 10.0, 0.5),
        Example("install", "t2", [], 0.0, 4.0, 11.0, 86_400.0),
    ]
    prices = [PriceObservation("2|x|DE|banner", "above", 1_250_000)]
    parcel, back, back_prices = decode_parcel(encode_parcel("s", 7, examples, prices, 12.5))
    assert (parcel.sender, parcel.seq, parcel.watermark) == ("s", 7, 12.5)
    assert back == examples and back_prices == prices


@pytest.mark.parametrize(
    "data",
    [
        b"not msgpack at all",
        msgspec.msgpack.encode(["s", 1, [["oops", "t", [], 0.0, 1.0, 0.0, 0.0]], [], 0.0]),
        msgspec.msgpack.encode(["s", 1, [], [["seg", "sideways", 5]], 0.0]),
        msgspec.msgpack.encode(["s", "one", [], [], 0.0]),
    ],
)
def test_what_is_not_a_parcel_is_refused(data: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_parcel(data)


def test_gaps_are_counted_lost_and_repeats_ignored() -> None:
    seen = Sequences()
    assert seen.accept("a", 1) and seen.accept("a", 2)
    assert seen.accept("b", 40)  # the first parcel of a sender: nothing to compare with
    assert seen.accept("a", 5)  # 3 and 4 never came
    assert not seen.accept("a", 4) and not seen.accept("a", 5)
    assert seen.accept("b", 41)
    assert (seen.lost, seen.repeated) == (2, 2)


def test_the_leader_learns_each_parcel_once_and_counts_the_rest() -> None:
    from learner.ftrl import FtrlParams
    from learner.online import LearnerConfig, OnlineLearner
    from learner.relay import learn_parcels

    grid = (FtrlParams(alpha=0.1, bits=10),)
    learner = OnlineLearner(LearnerConfig(click_grid=grid, install_grid=grid, batch_examples=10**6))

    def parcel(seq: int, n: int) -> bytes:
        examples = [
            Example("click", f"t{seq}-{i}", ["app=a"], float(i % 2), 1.0, 1.0, 0.5)
            for i in range(n)
        ]
        prices = [PriceObservation("2|x|DE|banner", "exact", 900_000)]
        return encode_parcel("follower-1", seq, examples, prices, 2.0)

    seen = Sequences()
    counts = learn_parcels(learner, [parcel(1, 3), parcel(1, 3), b"junk", parcel(4, 2)], seen)
    assert counts == {"received": 2, "repeated": 1, "malformed": 1, "lost": 2}
    learner.train()
    assert learner.learnt == {"click": 5, "install": 0}  # 3 + 2: the repeat learnt nothing


async def test_the_leader_drops_a_peer_sending_an_oversized_frame_and_keeps_serving() -> None:
    """Real sockets on loopback: a frame over the bound is never delivered (ZMQ closes that
    connection); a parcel from a well-behaved sender still arrives."""
    import asyncio

    import zmq

    from learner.relay import RELAY_MAX_PARCEL_BYTES, RelayReceiver, RelaySender

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    receiver = RelayReceiver(context, "tcp://127.0.0.1:*")
    stray = context.socket(zmq.PUSH)
    sender = RelaySender(context, "learner-1")
    try:
        stray.connect(receiver.endpoint)
        stray.send(b"\0" * (RELAY_MAX_PARCEL_BYTES + 1))
        sender.connect(receiver.endpoint)
        assert sender.send([], [PriceObservation("s", "exact", 1_000)], watermark=1.0)
        data = await asyncio.wait_for(receiver.recv(), 10)
        parcel, _, prices = decode_parcel(data)
        assert (parcel.sender, parcel.seq, len(prices)) == ("learner-1", 1, 1)
        with pytest.raises(TimeoutError):  # the oversized frame never comes
            await asyncio.wait_for(receiver.recv(), 0.5)
    finally:
        stray.close(linger=0)
        sender.close()
        receiver.close()
        context.term()
