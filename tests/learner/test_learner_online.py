"""The online learner end to end on a synthetic event stream, its export, and checkpoints that
resume to the same state."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bidder.scoring import HashedLinearModel
from fleet.events import AnyEvent
from fleet.model import decode_sparse, encode_sparse
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.errors import CheckpointError
from learner.ftrl import FtrlParams
from learner.grid import GridSettings
from learner.join import JoinSettings
from learner.online import LearnerConfig, OnlineLearner
from learner.synthetic import ClickWorld, event_stream

CONFIG = LearnerConfig(
    click_grid=(
        FtrlParams(alpha=0.1, beta=1.0, l1=0.5, l2=1.0, bits=16),
        FtrlParams(alpha=0.05, beta=1.0, l1=1.0, l2=1.0, bits=14, half_life=50_000.0),
    ),
    install_grid=(FtrlParams(alpha=0.1, beta=1.0, l1=0.5, l2=1.0, bits=12),),
    grid=GridSettings(block_examples=500, window_blocks=20, min_blocks=5, bootstrap_samples=100),
    join=JoinSettings(click_window_s=300.0, install_window_s=3600.0, bid_ttl_s=60.0),
    batch_examples=1000,
    inverse_capacity=200,
    inverse_every=2,
    seed=17,
)


@pytest.fixture(scope="module")
def events() -> list[AnyEvent]:
    rng = np.random.default_rng(4)
    world = ClickWorld(rng, base_rate=0.05)
    return event_stream(world, rng, 30_000)


def test_learns_clicks_and_the_market(events: list[AnyEvent]) -> None:
    learner = OnlineLearner(CONFIG)
    learner.feed_all(events)
    learner.drain()
    stats = learner.joiner.stats
    assert stats.examples["click"] == learner.learnt["click"] > 10_000
    assert stats.positives["click"] > 300 and stats.positives["install"] > 10
    assert stats.unjoined == 0 and stats.late_labels == 0
    report = learner.select(np.random.default_rng(1))["click"].reports[0]
    assert report.normalised_entropy.value < 1.0
    delays = learner.take_label_delays()
    assert len(delays) == stats.positives["click"] + stats.positives["install"]
    assert 10 < float(np.median(delays)) < 600
    mu, sigma = learner.market.fit().params("2|ex|US|320x50")
    assert mu == pytest.approx(math.log(1_500_000), abs=0.05)
    assert sigma == pytest.approx(0.5, abs=0.05)
    names = [n for n, _ in learner.heaviest(10)]
    assert len(names) == 10 and len(learner.inverse) <= 400


def test_export_scores_the_same_in_the_bidder(events: list[AnyEvent]) -> None:
    learner = OnlineLearner(CONFIG)
    learner.feed_all(events[:40_000])
    learner.drain()
    learner.grids["click"].chosen = 1  # 14 bits; the 12-bit install head is written at 14
    model = decode_sparse(encode_sparse(learner.export(version=3)))
    assert model.bits == 14 and model.seed == 17 and model.version == 3
    assert 0 < model.nonzero < 2 * (1 << 14)
    bidder = HashedLinearModel(
        model.click.dense(14),
        model.install.dense(14),
        model.click.bias,
        model.install.bias,
        bits=14,
        seed=17,
        version=3,
    )
    features = [e.features for e in events[:2000] if hasattr(e, "features")][:200]
    from learner.batch import to_batch

    batch = to_batch(features, np.zeros(len(features)), seed=17)
    p_click = learner.grids["click"].estimators[1].predict(batch.hashes, batch.offsets)
    p_install = learner.grids["install"].estimators[0].predict(batch.hashes, batch.offsets)
    for f, pc, pi in zip(features, p_click, p_install, strict=True):
        got = bidder.predict(f)
        assert got[0] == pytest.approx(pc, rel=1e-4)
        assert got[1] == pytest.approx(pi, rel=1e-4)


def test_checkpoint_resumes_to_the_same_state(events: list[AnyEvent], tmp_path: Path) -> None:
    cut = 25_000
    straight = OnlineLearner(CONFIG)
    straight.feed_all(events[:cut])
    path = tmp_path / "learner.ckpt"
    size = save_checkpoint(straight, path)
    assert size == path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["learner.ckpt"]  # no temporary left
    resumed = load_checkpoint(path, CONFIG)
    for learner in (straight, resumed):
        learner.feed_all(events[cut:])
        learner.drain()
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert straight.select(rng_a)["click"] == resumed.select(rng_b)["click"]
    a = encode_sparse(straight.export(version=5))
    b = encode_sparse(resumed.export(version=5))
    assert a == b
    assert straight.joiner.stats == resumed.joiner.stats
    assert straight.inverse.names == resumed.inverse.names
    for h in ("click", "install"):
        for x, y in zip(straight.grids[h].estimators, resumed.grids[h].estimators, strict=True):
            assert np.array_equal(x.get_state().state, y.get_state().state)


def test_bad_checkpoints_are_refused(events: list[AnyEvent], tmp_path: Path) -> None:
    learner = OnlineLearner(CONFIG)
    learner.feed_all(events[:3000])
    path = tmp_path / "c.ckpt"
    save_checkpoint(learner, path)
    other = dataclasses.replace(CONFIG, seed=18)
    with pytest.raises(CheckpointError, match="grid or seed"):
        load_checkpoint(path, other)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path, CONFIG)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing.ckpt", CONFIG)
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(learner, tmp_path / "no-such-dir" / "c.ckpt")


def test_market_evidence_fades_with_stream_time() -> None:
    from fleet.events import BidEvent, LossEvent

    config = dataclasses.replace(CONFIG, market_half_life_s=100.0)
    learner = OnlineLearner(config)
    features = ["exchange=ex", "country=US", "fmt=video"]
    for i in range(400):
        ts = i * 1.0  # 400 s: four half-lives
        learner.feed(
            BidEvent(
                txid=f"t{i}",
                ts=ts,
                imp_id="1",
                campaign_id=1,
                creative_id=1,
                bid_cpm_micros=1_000_000,
                floor_cpm_micros=0,
                value_cpm_micros=1,
                p_click=0,
                p_install=0,
                auction_type=2,
                features=features,
            )
        )
        learner.feed(
            LossEvent(txid=f"t{i}", ts=ts, campaign_id=1, creative_id=1, bid_cpm_micros=1_000_000)
        )
    weight = learner.market.segments["2|ex|US|video"].weight
    # sum over 400 losses of 0.5 ** (age / 100), applied in steps of 1 s
    want = sum(0.5 ** (k / 100) for k in range(400))
    assert weight == pytest.approx(want, rel=0.02)
    assert weight < 150


def test_checkpoint_with_a_wrong_array_is_refused(events: list[AnyEvent], tmp_path: Path) -> None:
    import io

    learner = OnlineLearner(CONFIG)
    learner.feed_all(events[:2000])
    path = tmp_path / "c.ckpt"
    save_checkpoint(learner, path)
    with np.load(io.BytesIO(path.read_bytes())) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["click.0.state"] = arrays["click.0.state"][:10]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(path, CONFIG)
