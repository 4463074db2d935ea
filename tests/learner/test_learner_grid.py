"""The estimator grid: progressive validation, bootstrap intervals, and a switch only when a
challenger is better beyond the noise."""

from __future__ import annotations

import numpy as np
import pytest

from learner.batch import to_batch
from learner.errors import BadParameters
from learner.ftrl import FtrlParams
from learner.grid import EstimatorGrid, GridSettings, ProgressiveValidation, log_losses
from learner.synthetic import ClickWorld, constant_log_loss


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    world = ClickWorld(rng, base_rate=0.05)
    clicks = world.draw(rng, 60_000)
    return clicks, to_batch(clicks.features, clicks.y)


SETTINGS = GridSettings(block_examples=1000, window_blocks=30, min_blocks=10, bootstrap_samples=200)


def test_progressive_sums_match_a_direct_computation() -> None:
    pv = ProgressiveValidation(2, GridSettings(block_examples=3, window_blocks=2, min_blocks=2))
    rng = np.random.default_rng(0)
    p = rng.random((2, 10))
    y = (rng.random(10) < 0.5).astype(float)
    w = rng.random(10) + 0.5
    pv.add(p[:, :4], y[:4], w[:4])
    pv.add(p[:, 4:], y[4:], w[4:])
    # blocks [0,3) [3,6) [6,9); the ring keeps the last two; one example is in the current block
    assert pv.filled == 2 and pv.in_current == 1
    ll = log_losses(p, y[None, :]) * w
    window = pv.window().sum(axis=0)
    np.testing.assert_allclose(window[:, 0], ll[:, 3:9].sum(axis=1))
    np.testing.assert_allclose(window[:, 1], w[3:9].sum())
    np.testing.assert_allclose(window[:, 2], (p * w)[:, 3:9].sum(axis=1))
    np.testing.assert_allclose(window[:, 3], (y * w)[3:9].sum())
    np.testing.assert_allclose(pv.total[:, 0], ll.sum(axis=1))


def test_switches_to_a_clearly_better_estimator(data) -> None:  # type: ignore[no-untyped-def]
    clicks, batch = data
    slow = FtrlParams(alpha=0.002, beta=1.0, l1=0.0, l2=0.0, bits=18)
    good = FtrlParams(alpha=0.1, beta=1.0, l1=0.5, l2=1.0, bits=18)
    grid = EstimatorGrid([slow, good], SETTINGS)
    rng = np.random.default_rng(5)
    chosen_over_time = []
    for start in range(0, batch.rows, 5000):
        b = batch.slice(start, min(batch.rows, start + 5000))
        grid.learn(b.hashes, b.offsets, b.labels, b.weights)
        chosen_over_time.append(grid.select(rng).chosen)
    assert chosen_over_time[0] == 0  # too few blocks to judge
    assert chosen_over_time[-1] == 1
    assert grid.switches == 1
    reports = grid.select(rng).reports
    good_report = reports[1]
    assert good_report.log_loss.low <= good_report.log_loss.value <= good_report.log_loss.high
    assert good_report.normalised_entropy.value < 0.97
    assert good_report.log_loss.value < constant_log_loss(clicks.y)
    assert 0.7 < good_report.calibration.value < 1.3
    assert reports[0].log_loss.value > good_report.log_loss.value


def test_no_switch_within_the_noise(data) -> None:  # type: ignore[no-untyped-def]
    _, batch = data
    a = FtrlParams(alpha=0.1, beta=1.0, l1=0.5, l2=1.0, bits=18)
    b = FtrlParams(alpha=0.1001, beta=1.0, l1=0.5, l2=1.0, bits=18)
    grid = EstimatorGrid([a, b], SETTINGS)
    rng = np.random.default_rng(6)
    for start in range(0, batch.rows, 5000):
        part = batch.slice(start, min(batch.rows, start + 5000))
        grid.learn(part.hashes, part.offsets, part.labels, part.weights)
        assert grid.select(rng).chosen == 0
    assert grid.switches == 0


def test_grid_settings_are_checked() -> None:
    with pytest.raises(BadParameters):
        GridSettings(confidence=0.3)
    with pytest.raises(BadParameters):
        EstimatorGrid([])


def test_threads_give_the_same_grid(data) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    _, batch = data
    params = [FtrlParams(alpha=0.05 * (k + 1), bits=16) for k in range(3)]
    serial = EstimatorGrid(params, SETTINGS)
    with ThreadPoolExecutor(2) as pool:
        threaded = EstimatorGrid(params, SETTINGS, pool=pool)
        for start in range(0, 20_000, 4096):
            part = batch.slice(start, min(20_000, start + 4096))
            a = serial.learn(part.hashes, part.offsets, part.labels, part.weights)
            b = threaded.learn(part.hashes, part.offsets, part.labels, part.weights)
            assert np.array_equal(a, b)
    for x, y in zip(serial.estimators, threaded.estimators, strict=True):
        assert np.array_equal(x.get_state().state, y.get_state().state)
