"""The learner service end to end: a bidder process bids and publishes its bid events on a real
event bus (a ``fleet.proxy`` process); impressions and clicks for those bids are published by a
real ``fleet.bus`` publisher as the tracker does; the learner (in this process) joins and learns
them, stores a model in Postgres and announces it on the coherence bus (another proxy); the
running bidder process loads it and its scores change. Then a restart of the learner resumes
from its checkpoint, and a model of a feature set the bidder does not compute is refused."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from conftest_bidder import BidderProcess, banner_request, post
from conftest_cache import proxy_process

from cache import Cache
from cache.models import LATEST_KEY, MODEL_NAMESPACE, model_namespace
from fleet import model as mf
from fleet.bus import Publisher
from fleet.bus.subscriber import Subscriber
from fleet.db.model_store import latest_version, load_model, save_model
from fleet.events import BidEvent, ClickEvent, ImpressionEvent, decode, encode, topic_for
from fleet.portfolio import load_document
from learner.service import LearnerService
from learner.settings import LearnerSettings
from sim.portfolio import catch_all

CLICK_SHARE = 0.5  # far above the bidder's prior click rate: the learnt bias must show


def learner_settings(
    pg_dsn: str, events: tuple[str, str], coherence: tuple[str, str], ckpt: Path
) -> LearnerSettings:
    env = {
        "RTBFLEET_PG_DSN": pg_dsn,
        "RTBFLEET_MEMCACHED": "",
        "RTBFLEET_EVENT_BUS_IN": events[0],
        "RTBFLEET_EVENT_BUS_OUT": events[1],
        "RTBFLEET_COHERENCE_BUS_IN": coherence[0],
        "RTBFLEET_COHERENCE_BUS_OUT": coherence[1],
        "RTBFLEET_CACHE_BUS": "1",
        "RTBFLEET_LEARNER_CHECKPOINT": str(ckpt),
        "RTBFLEET_LEARNER_CLICK_WINDOW_S": "1",
        "RTBFLEET_LEARNER_BID_TTL_S": "30",
        "RTBFLEET_LEARNER_FLUSH_INTERVAL_S": "0.2",
        "RTBFLEET_LEARNER_EXPORT_INTERVAL_S": "600",  # the test exports when it wants
        "RTBFLEET_LEARNER_CHECKPOINT_INTERVAL_S": "600",
        "RTBFLEET_LEARNER_CLICK_GRID": "alpha=0.5,l1=0.1;alpha=0.2,l1=0.1",
        "RTBFLEET_LEARNER_INSTALL_GRID": "alpha=0.5,l1=0.1",
    }
    return LearnerSettings.from_env(env, env_file=None)


@contextlib.asynccontextmanager
async def learner(settings: LearnerSettings, dsn: str) -> AsyncIterator[LearnerService]:
    service = LearnerService(settings, dsn, rng=np.random.default_rng(1))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def bid_events(
    sub: Subscriber, bidder: BidderProcess, count: int, prefix: str
) -> list[BidEvent]:
    """Send ``count`` bid requests; the bid events the bidder published for them."""
    loop = asyncio.get_running_loop()
    for i in range(count):
        request = json.dumps(banner_request(f"{prefix}{i}")).encode()
        status, _ = await loop.run_in_executor(None, post, f"{bidder.url}/openrtb2/bid", request)
        assert status == 200, bidder.log()
    found: list[BidEvent] = []
    deadline = time.monotonic() + 15
    while len(found) < count:
        assert time.monotonic() < deadline, (len(found), bidder.log())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                d = await sub.recv()
                if d.kind == "data":
                    for payload in d.payloads:
                        event = decode(payload)
                        if isinstance(event, BidEvent) and event.txid.startswith(prefix):
                            found.append(event)
    return found


def outcomes(bids: list[BidEvent], rng: np.random.Generator) -> list[ImpressionEvent | ClickEvent]:
    """What the tracker publishes for these bids: an impression each, a click for some."""
    out: list[ImpressionEvent | ClickEvent] = []
    for b in bids:
        out.append(
            ImpressionEvent(
                txid=b.txid, ts=b.ts + 0.05, campaign_id=b.campaign_id, creative_id=b.creative_id
            )
        )
        if rng.random() < CLICK_SHARE:
            out.append(
                ClickEvent(
                    txid=b.txid,
                    ts=b.ts + 0.1,
                    campaign_id=b.campaign_id,
                    creative_id=b.creative_id,
                    click_id=f"c-{b.txid}",
                )
            )
    return out


@pytest.mark.timeout(180)
def test_a_learnt_model_reaches_the_running_bidder_and_changes_its_scores(
    tmp_path: Path, pg_dsn: str
) -> None:
    asyncio.run(load_document(pg_dsn, catch_all()))
    with proxy_process() as events, proxy_process() as coherence:
        bidder = BidderProcess(
            {
                "RTBFLEET_PG_DSN": pg_dsn,
                "RTBFLEET_EVENT_BUS_IN": events[0],
                "RTBFLEET_EVENT_BUS_OUT": events[1],
                "RTBFLEET_COHERENCE_BUS_IN": coherence[0],
                "RTBFLEET_COHERENCE_BUS_OUT": coherence[1],
                "RTBFLEET_BIDDER_PUBLISH_EVENTS": "1",
                "RTBFLEET_BIDDER_MODEL_CHECK": "600",  # only the announcement is in time
                "RTBFLEET_BIDDER_ID": "itest",
            },
            tmp_path / "bidder.log",
        )
        try:
            bidder.wait_ready()
            asyncio.run(_the_loop(tmp_path, pg_dsn, events, coherence, bidder))
        finally:
            code = bidder.stop()
        assert code == 0, bidder.log()
        assert "refused" in bidder.log(), bidder.log()


async def _the_loop(
    tmp_path: Path,
    pg_dsn: str,
    events: tuple[str, str],
    coherence: tuple[str, str],
    bidder: BidderProcess,
) -> None:
    rng = np.random.default_rng(7)
    settings = learner_settings(pg_dsn, events, coherence, tmp_path / "learner.ckpt")
    sub = Subscriber(events[1], prefixes=["ev."], heartbeat_timeout=5.0)
    tracker = Publisher(events[0], publisher_id="itest-tracker", batch_delay=0.001)
    await sub.start()
    await tracker.start()
    try:
        async with learner(settings, pg_dsn) as service:
            before = await bid_events(sub, bidder, 40, "before-")
            assert {b.model_version for b in before} == {0}
            prior = float(np.mean([b.p_click for b in before]))
            for e in outcomes(before, rng):
                tracker.publish(topic_for(e), encode(e))
            await tracker.flush()
            # the learner hears them, waits out the click window in stream time, learns
            deadline = time.monotonic() + 30
            while service.learner.learnt["click"] < len(before):
                assert time.monotonic() < deadline, service.health()
                await asyncio.sleep(0.3)
                more = await bid_events(sub, bidder, 2, f"tick{time.monotonic_ns()}-")
                for e in outcomes(more, rng):  # they move the stream time on
                    tracker.publish(topic_for(e), encode(e))
                await tracker.flush()
            version = await service.export()
            assert version > 0
            conn = await asyncpg.connect(pg_dsn)
            try:
                assert await latest_version(conn) == version
                stored = await load_model(conn, version)
            finally:
                await conn.close()
            assert stored is not None
            exported = mf.decode(stored.body)
            # the announcement reaches the bidder process: its bids carry the new model
            deadline = time.monotonic() + 20
            while True:
                assert time.monotonic() < deadline, bidder.log()
                after = await bid_events(sub, bidder, 5, f"after{time.monotonic_ns()}-")
                if all(b.model_version == version for b in after):
                    break
                await asyncio.sleep(0.2)
            # the bidder scores with exactly the exported model, and it learnt the clicks
            for b in after:
                assert b.p_click == pytest.approx(mf.predict(exported, b.features)[0], rel=1e-5)
            learnt = float(np.mean([b.p_click for b in after]))
            assert learnt > 1.1 * prior, (prior, learnt)
            saved = service.learner.learnt["click"]
        # a clean stop checkpointed: a new learner resumes where this one stopped
        async with learner(settings, pg_dsn) as again:
            assert again.resumed and again.learner.learnt["click"] >= saved
        # a model of another feature set: refused, the bidder keeps scoring with the old one
        conn = await asyncpg.connect(pg_dsn)
        try:
            kept = await latest_version(conn)  # the learner's last export at its stop
            assert kept >= version
            foreign = dataclasses.replace(
                service.learner.export(kept + 1), feature_set="another.set"
            )
            assert await save_model(conn, foreign)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(pg_dsn, min_size=0, max_size=1)
        announcer = Cache(settings.cache, origin="itest-announcer")
        announcer.register(model_namespace(pool))
        await announcer.start()
        try:
            await announcer.invalidate(MODEL_NAMESPACE, LATEST_KEY, kept + 1)
        finally:
            await announcer.close()
            await pool.close()
        deadline = time.monotonic() + 10
        while "refused" not in bidder.log():
            assert time.monotonic() < deadline, bidder.log()
            await asyncio.sleep(0.1)
        still = await bid_events(sub, bidder, 3, "still-")
        assert {b.model_version for b in still} <= {version, kept}
    finally:
        await tracker.close()
        await sub.close()


def test_models_table_keeps_one_row_per_version(pg_dsn: str) -> None:
    async def go() -> None:
        m = mf.SparseModel(
            version=5,
            bits=4,
            seed=0,
            feature_set="bidder.scoring",
            feature_set_version=1,
            click=mf.SparseHead.from_dense(-1.0, np.ones(16, np.float32)),
            install=mf.SparseHead.from_dense(-1.0, np.zeros(16, np.float32)),
            market=mf.MarketTable(mf.MarketSegment(14.0, 0.5, 1.0)),
        )
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await latest_version(conn) == 0
            assert await save_model(conn, m)
            assert not await save_model(conn, m)  # a replay is a no-op
            assert await latest_version(conn) == 5
        finally:
            await conn.close()

    asyncio.run(go())


def test_model_show_prints_the_newest_model_and_its_heaviest_features_by_name(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rtbfleet model show``: names from a learner checkpoint, weights from the stored model."""
    import argparse
    import io

    from fleet.events import BidEvent
    from fleet.settings import FleetSettings
    from learner.checkpoint import save_checkpoint
    from learner.commands import model_show
    from learner.online import OnlineLearner

    settings = learner_settings(
        pg_dsn, ("tcp://127.0.0.1:1",) * 2, ("tcp://127.0.0.1:1",) * 2, tmp_path / "c"
    )
    online = OnlineLearner(settings.to_config())
    rng = np.random.default_rng(3)
    for i in range(600):
        hot = i % 2 == 0
        feats = ["app=hot.game" if hot else "app=cold.news", f"country={'US' if i % 3 else 'DE'}"]
        online.feed(
            BidEvent(
                txid=f"t{i}",
                ts=float(i),
                imp_id="1",
                campaign_id=1,
                creative_id=1,
                bid_cpm_micros=1_000_000,
                floor_cpm_micros=0,
                value_cpm_micros=2_000_000,
                p_click=0.01,
                p_install=0.0,
                auction_type=2,
                features=feats,
            )
        )
        online.feed(ImpressionEvent(txid=f"t{i}", ts=i + 0.1, campaign_id=1, creative_id=1))
        if hot and rng.random() < 0.6:
            online.feed(ClickEvent(txid=f"t{i}", ts=i + 0.2, campaign_id=1, creative_id=1))
    online.drain()
    ckpt = tmp_path / "learner.ckpt"
    save_checkpoint(online, ckpt)
    monkeypatch.setenv("RTBFLEET_LEARNER_CLICK_GRID", "alpha=0.5,l1=0.1;alpha=0.2,l1=0.1")
    monkeypatch.setenv("RTBFLEET_LEARNER_INSTALL_GRID", "alpha=0.5,l1=0.1")

    async def store() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await save_model(conn, online.export(11), estimator="click:0,install:0")
        finally:
            await conn.close()

    asyncio.run(store())
    out = io.StringIO()
    args = argparse.Namespace(version=None, top=3, checkpoint=ckpt)
    assert model_show(FleetSettings(pg_dsn=pg_dsn), args, out) == 0
    text = out.getvalue()
    assert text.startswith("model 11: feature set bidder.scoring v2"), text
    heavy = text.split("heaviest click features:\n", 1)[1].splitlines()
    assert "app=hot.game" in heavy[0] or "app=cold.news" in heavy[0], text
    args = argparse.Namespace(version=99, top=3, checkpoint=ckpt)
    assert model_show(FleetSettings(pg_dsn=pg_dsn), args, io.StringIO()) == 1


def test_one_learner_per_fleet_a_second_one_refuses_to_start(tmp_path: Path, pg_dsn: str) -> None:
    """Learners that split the partitions would overwrite each other's models in the bidders:
    a second learner of the same fleet (the same Postgres) refuses with one clear line, in
    process and as ``python -m learner``; once the first stops, a learner starts again."""
    import os
    import subprocess
    import sys

    from learner.errors import AnotherLearner

    with proxy_process() as events, proxy_process() as coherence:
        first = learner_settings(pg_dsn, events, coherence, tmp_path / "a.ckpt")
        second = dataclasses.replace(first, checkpoint_path=tmp_path / "b.ckpt", share="1/2")

        async def go() -> None:
            async with learner(first, pg_dsn):
                with pytest.raises(AnotherLearner, match="one learner per fleet"):
                    await LearnerService(second, pg_dsn).start()
                assert not (tmp_path / "b.ckpt").exists()
                env = {
                    **os.environ,
                    "RTBFLEET_PG_DSN": pg_dsn,
                    "RTBFLEET_MEMCACHED": "",
                    "RTBFLEET_EVENT_BUS_OUT": events[1],
                    "RTBFLEET_COHERENCE_BUS_IN": coherence[0],
                    "RTBFLEET_COHERENCE_BUS_OUT": coherence[1],
                    "RTBFLEET_LEARNER_PORT": "0",
                    "RTBFLEET_LEARNER_CHECKPOINT": str(tmp_path / "c.ckpt"),
                }
                proc = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "learner"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert proc.returncode == 1, proc.stderr
                lines = proc.stderr.strip().splitlines()
                assert len(lines) == 1 and "another learner already runs" in lines[0], lines
            async with learner(second, pg_dsn) as again:  # the lock went with the first
                assert again.health()["model_version"] == 0

        asyncio.run(go())
