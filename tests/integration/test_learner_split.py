"""Learners that split the partitions, against a real event bus (a ``fleet.proxy`` process), a
real ZMQ relay between them and Postgres: two learners (shares 0/2 and 1/2) feed one model
with exactly the examples one learner over all partitions learns from the same stream; when
the leader stops, the other takes the lock, resumes the stored training state, and with the
first back as a follower the model again holds every example once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import mmh3
import pytest
from conftest_cache import proxy_process
from test_learner_service import learner

from fleet.bus import Publisher
from fleet.events import BidEvent, ClickEvent, ImpressionEvent, WinEvent, encode, topic_for
from learner.settings import LearnerSettings

SPLIT_KEY = 0x5EED_0001
WHOLE_KEY = 0x5EED_0002


def settings_for(
    pg_dsn: str, events: tuple[str, str], coherence: tuple[str, str]
) -> LearnerSettings:
    env = {
        "RTBFLEET_PG_DSN": pg_dsn,
        "RTBFLEET_MEMCACHED": "",
        "RTBFLEET_EVENT_BUS_IN": events[0],
        "RTBFLEET_EVENT_BUS_OUT": events[1],
        "RTBFLEET_COHERENCE_BUS_IN": coherence[0],
        "RTBFLEET_COHERENCE_BUS_OUT": coherence[1],
        "RTBFLEET_CACHE_BUS": "1",
        "RTBFLEET_LEARNER_CLICK_WINDOW_S": "1",
        "RTBFLEET_LEARNER_INSTALL_WINDOW_S": "1",
        "RTBFLEET_LEARNER_BID_TTL_S": "30",
        "RTBFLEET_LEARNER_FLUSH_INTERVAL_S": "0.2",
        "RTBFLEET_LEARNER_LEADER_POLL_S": "0.2",
        "RTBFLEET_LEARNER_EXPORT_INTERVAL_S": "600",
        "RTBFLEET_LEARNER_CHECKPOINT_INTERVAL_S": "600",
        "RTBFLEET_LEARNER_CLICK_GRID": "alpha=0.5,l1=0.1,bits=16;alpha=0.2,l1=0.1,bits=16",
        "RTBFLEET_LEARNER_INSTALL_GRID": "alpha=0.5,l1=0.1,bits=16",
    }
    return LearnerSettings.from_env(env, env_file=None)


Stream = list[BidEvent | WinEvent | ImpressionEvent | ClickEvent]


def transactions(prefix: str, count: int, t0: float) -> tuple[Stream, Stream, Stream]:
    """Bids; their wins and impressions; clicks for about one in four (chosen by the txid). All
    within a second of stream time, less than the click window: no window closes before the
    ticks, however the bus interleaves the partitions' topics."""
    bids: Stream = []
    shown: Stream = []
    clicks: Stream = []
    for i in range(count):
        txid, ts = f"{prefix}{i}", t0 + 0.001 * i
        campaign = 1 + i % 3
        bids.append(
            BidEvent(
                txid=txid,
                ts=ts,
                imp_id="1",
                campaign_id=campaign,
                creative_id=1,
                bid_cpm_micros=1_000_000,
                floor_cpm_micros=0,
                value_cpm_micros=2_000_000,
                p_click=0.01,
                p_install=0.0,
                auction_type=2,
                features=[f"app=a{i % 7}", f"campaign={campaign}", f"country=C{i % 2}"],
                segment="2|x|US|300x250",
            )
        )
        shown.append(
            WinEvent(
                txid=txid,
                ts=ts + 0.4,
                campaign_id=campaign,
                creative_id=1,
                bid_cpm_micros=1_000_000,
                clear_cpm_micros=400_000 + 1000 * (i % 50),
            )
        )
        shown.append(ImpressionEvent(txid=txid, ts=ts + 0.4, campaign_id=campaign, creative_id=1))
        if mmh3.hash(txid, 3, signed=False) % 4 == 0:
            clicks.append(ClickEvent(txid=txid, ts=ts + 0.5, campaign_id=campaign, creative_id=1))
    return bids, shown, clicks


async def feed(
    pub: Publisher,
    phases: tuple[Stream, Stream, Stream],
    heard: Callable[[], int],
    tick: str,
    t: float,
) -> None:
    """Publish the phases one after another, each once the learners have heard the bids (a bid
    must be known before its outcome), then the ticks that close every window."""
    bids, shown, clicks = phases
    await publish(pub, bids)
    await until(lambda: heard() >= len(bids), 20, heard)
    await publish(pub, shown)
    await asyncio.sleep(0.5)
    await publish(pub, clicks)
    await asyncio.sleep(0.5)
    await publish(pub, ticks(tick, t))


def ticks(prefix: str, t: float) -> list[BidEvent]:
    """Bids in every partition at stream time ``t``: every window before it closes."""
    return [
        BidEvent(
            txid=f"{prefix}{i}",
            ts=t,
            imp_id="1",
            campaign_id=1,
            creative_id=1,
            bid_cpm_micros=1,
            floor_cpm_micros=0,
            value_cpm_micros=1,
            p_click=0.01,
            p_install=0.0,
            auction_type=2,
        )
        for i in range(512)
    ]


async def publish(pub: Publisher, events: Stream | list[BidEvent]) -> None:
    for e in events:
        pub.publish(topic_for(e), encode(e))
    await pub.flush()


async def until(what: Callable[[], bool], timeout: float, why: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why()
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
def test_two_partitioned_learners_feed_one_model_with_the_examples_of_one_learner(
    tmp_path: Path, pg_dsn: str
) -> None:
    _with_learners(tmp_path, pg_dsn, _split_and_lead_again)


async def _split_and_lead_again(
    first: LearnerSettings,
    second: LearnerSettings,
    whole: LearnerSettings,
    dsn: str,
    events: tuple[str, str],
) -> None:
    pub = Publisher(events[0], publisher_id="itest-split", batch_delay=0.001)
    await pub.start()
    try:
        async with (
            learner(whole, dsn) as one,
            learner(second, dsn) as b,
            learner(first, dsn) as a,
        ):
            # b started first and leads; a follows it
            await until(lambda: bool(a._sender and a._sender.address), 10, a.health)
            assert b.leading and not a.leading and b.epoch == 1
            await asyncio.sleep(1.0)  # the subscriptions reach the proxy
            heard = lambda: min(  # noqa: E731
                one.learner.joiner.stats.bids,
                a.learner.joiner.stats.bids + b.learner.joiner.stats.bids,
            )
            await feed(pub, transactions("x", 400, 1000.0), heard, "tick-a-", 1100.0)
            await until(lambda: one.learner.learnt["click"] == 400, 30, one.health)
            await until(
                lambda: b.learner.learnt == one.learner.learnt,
                30,
                lambda: (b.health(), one.health()),
            )
            assert a.learner.learnt == {"click": 0, "install": 0}  # a follower only joins
            sa, sb, so = (
                a.learner.joiner.stats,
                b.learner.joiner.stats,
                one.learner.joiner.stats,
            )
            assert sa.positives["click"] + sb.positives["click"] == so.positives["click"] > 50
            assert sa.examples["click"] > 100 and sb.examples["click"] > 100  # both shares
            assert sa.prices + sb.prices == so.prices == 400
            assert b.health()["relay_lost"] == 0
            assert await a.export() == 0  # only the leader exports
            assert await b.export() > 0
    finally:
        await pub.close()


@pytest.mark.timeout(180)
def test_a_leader_change_resumes_the_stored_training_and_learns_every_example_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    _with_learners(tmp_path, pg_dsn, _leader_change)


async def _leader_change(
    first: LearnerSettings,
    second: LearnerSettings,
    whole: LearnerSettings,
    dsn: str,
    events: tuple[str, str],
) -> None:
    pub = Publisher(events[0], publisher_id="itest-split", batch_delay=0.001)
    await pub.start()
    try:
        async with learner(whole, dsn) as one:
            async with learner(second, dsn) as b, learner(first, dsn) as a:
                await until(lambda: bool(a._sender and a._sender.address), 10, a.health)
                assert b.leading and not a.leading
                await asyncio.sleep(1.0)  # the subscriptions reach the proxy
                heard = lambda: min(  # noqa: E731
                    one.learner.joiner.stats.bids,
                    a.learner.joiner.stats.bids + b.learner.joiner.stats.bids,
                )
                await feed(pub, transactions("x", 300, 1000.0), heard, "tick-a-", 1100.0)
                await until(lambda: one.learner.learnt["click"] == 300, 30, one.health)
                await until(lambda: b.learner.learnt == one.learner.learnt, 30, b.health)
                # the follower stopped; now the leader stops cleanly: a last round, an export
                # and a checkpoint, which stores its training state for the next leader
            learnt_by_b = dict(b.learner.learnt)
            async with learner(first, dsn) as a:  # a starts alone and takes the lock
                assert a.leading and a.epoch == 2
                assert a.learner.learnt == learnt_by_b  # the stored training state, resumed
                async with learner(second, dsn) as b2:  # b comes back as a follower
                    await until(lambda: bool(b2._sender and b2._sender.address), 10, b2.health)
                    assert not b2.leading
                    await asyncio.sleep(1.0)
                    base = one.learner.joiner.stats.bids
                    heard = lambda: min(  # noqa: E731
                        one.learner.joiner.stats.bids - base,
                        a.learner.joiner.stats.bids + b2.learner.joiner.stats.bids,
                    )
                    await feed(pub, transactions("y", 300, 1200.0), heard, "tick-b-", 1300.0)
                    await until(lambda: one.learner.learnt["click"] == 600, 30, one.health)
                    assert a.health()["relay_lost"] == 0
                    await until(
                        lambda: a.learner.learnt == one.learner.learnt,
                        30,
                        lambda: (a.health(), b2.health(), one.health()),
                    )
                    assert b2.learner.learnt == learnt_by_b  # its own (stale) training: unused
    finally:
        await pub.close()


def test_a_replaced_leader_cannot_overwrite_its_successors_state(pg_dsn: str) -> None:
    """``learner.store``: each leadership is a new epoch; a state saved under an old epoch is
    refused, the successor's stays; the address is the newest leader's."""
    import asyncpg

    from learner.store import advertise, current_leader, load_state, save_state

    async def go() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await current_leader(conn, SPLIT_KEY) is None
            assert await load_state(conn, SPLIT_KEY) is None
            first = await advertise(conn, SPLIT_KEY, "tcp://10.0.0.1:9105", "a")
            assert await save_state(conn, SPLIT_KEY, first, b"first")
            second = await advertise(conn, SPLIT_KEY, "tcp://10.0.0.2:9105", "b")
            assert second == first + 1
            assert await load_state(conn, SPLIT_KEY) == b"first"  # until the new one saves
            assert await save_state(conn, SPLIT_KEY, second, b"second")
            assert not await save_state(conn, SPLIT_KEY, first, b"stale")
            assert await load_state(conn, SPLIT_KEY) == b"second"
            leader = await current_leader(conn, SPLIT_KEY)
            assert leader is not None and leader.address == "tcp://10.0.0.2:9105"
            assert await current_leader(conn, WHOLE_KEY) is None  # another fleet's key
        finally:
            await conn.close()

    asyncio.run(go())


Scenario = Callable[
    [LearnerSettings, LearnerSettings, LearnerSettings, str, tuple[str, str]],
    Coroutine[Any, Any, None],
]


def _with_learners(tmp_path: Path, pg_dsn: str, scenario: Scenario) -> None:
    """``scenario`` given two learners splitting the partitions in halves, a learner of all of
    them under its own lock, the DSN and the event bus's proxy."""
    with proxy_process() as events, proxy_process() as coherence:
        base = settings_for(pg_dsn, events, coherence)
        split = dataclasses.replace(base, relay_bind="tcp://127.0.0.1:0", lock_key=SPLIT_KEY)
        first = dataclasses.replace(split, share="0/2", checkpoint_path=tmp_path / "a.ckpt")
        second = dataclasses.replace(split, share="1/2", checkpoint_path=tmp_path / "b.ckpt")
        whole = dataclasses.replace(base, lock_key=WHOLE_KEY, checkpoint_path=tmp_path / "w.ckpt")
        asyncio.run(scenario(first, second, whole, pg_dsn, events))
