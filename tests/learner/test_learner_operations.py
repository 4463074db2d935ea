"""The learner's operations: inverse hash map, metrics, settings, and the market table as the
bidder's pricing reads it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bidder.pricing import market_params, price, shade
from fleet.errors import SettingsError
from fleet.model import MarketSegment, MarketTable
from learner.ftrl import FtrlParams
from learner.grid import EstimatorGrid, GridSettings
from learner.inverse import InverseHashMap
from learner.join import JoinStats
from learner.market import CensoredLogNormalMarket
from learner.metrics import LearnerMetrics
from learner.settings import LearnerSettings


def test_inverse_map_keeps_the_heaviest_within_its_bound() -> None:
    weights = {h: float(h % 7) - 3.0 for h in range(1000)}

    def weight_of(hashes: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        return np.array([weights[int(h)] for h in hashes])

    inv = InverseHashMap(capacity=50)
    for start in range(0, 1000, 10):
        inv.observe(
            [f"f{h}" for h in range(start, start + 10)], list(range(start, start + 10)), weight_of
        )
        assert len(inv) < 100
    inv.prune(weight_of)
    assert len(inv) == 50
    kept = [int(name[1:]) for name in inv.names]
    assert all(abs(weights[h]) == 3.0 for h in kept)  # the largest magnitudes
    top = inv.heaviest(5, weight_of)
    assert len(top) == 5 and all(abs(w) == 3.0 for _, w in top)
    assert inv.heaviest(0, weight_of) == []
    with pytest.raises(ValueError):
        InverseHashMap(0)


def test_metrics_record_what_the_core_returns() -> None:
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry)
    grid = EstimatorGrid(
        [FtrlParams(bits=8), FtrlParams(alpha=0.2, bits=8)],
        GridSettings(block_examples=10, window_blocks=5, min_blocks=2),
    )
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**32, 300, dtype=np.uint32)
    offsets = np.arange(0, 301, 3, dtype=np.int64)
    labels = (rng.random(100) < 0.3).astype(float)
    grid.learn(hashes, offsets, labels, np.ones(100))
    metrics.record_selection("click", grid.select(rng))
    stats = JoinStats(late_labels=3, duplicates=1)
    metrics.record_round({"click": 100, "install": 4}, 0.5, [2.0, 40.0], stats, 7, 4096, 2)
    metrics.record_round({"click": 0}, 1.0, [], stats, 5, 4096, 2)  # counters do not double
    metrics.record_model(12, 3456, 789)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("learner_examples_total", head="click") == 100
    assert value("learner_examples_per_second") == 0.0
    assert value("learner_join_events_total", reason="late_label") == 3
    assert value("learner_label_delay_seconds_count") == 2
    assert value("learner_progressive_log_loss", head="click", estimator="1") is not None
    assert value("learner_chosen_estimator", head="click") == grid.chosen
    assert (value("learner_estimator_switches_total", head="click") or 0) == grid.switches
    assert value("learner_model_version") == 12
    assert value("learner_model_bytes") == 3456
    assert value("learner_waiting_examples") == 5


def test_settings_build_the_config_and_refuse_bad_values() -> None:
    config = LearnerSettings.from_env(
        {
            "RTBFLEET_LEARNER_CLICK_GRID": "alpha=0.3,bits=16;alpha=0.1,bits=18,half_life=1e6",
            "RTBFLEET_LEARNER_NEGATIVE_RATE": "0.5",
        },
        None,
    ).to_config()
    assert [p.bits for p in config.click_grid] == [16, 18]
    assert config.join.negative_rate == 0.5
    with pytest.raises(SettingsError, match="RTBFLEET_LEARNER_CLICK_GRID"):
        LearnerSettings.from_env({"RTBFLEET_LEARNER_CLICK_GRID": "alpha=x"}, None)
    with pytest.raises(SettingsError, match="RTBFLEET_LEARNER_NEGATIVE_RATE"):
        LearnerSettings.from_env({"RTBFLEET_LEARNER_NEGATIVE_RATE": "0"}, None)
    with pytest.raises(SettingsError, match=r"min_blocks|window"):
        LearnerSettings.from_env({"RTBFLEET_LEARNER_WINDOW_BLOCKS": "1"}, None).to_config()


def test_the_bidder_prices_with_the_learnt_market_table() -> None:
    market = CensoredLogNormalMarket()
    for k in range(2000):
        market.observe_exact("1|ex|US|320x50", 1_000_000 + 500 * k)
    table = market.fit()
    segment = "1|ex|US|320x50"
    params = market_params(table, segment)  # the bidder's duck-typed reader
    assert params == table.params(segment)
    mu, sigma = params
    assert math.exp(mu) == pytest.approx(4e6 / math.e, rel=0.01)  # exp(mean ln), ln on [1, 2]
    bid = shade(3_000_000, 100_000, mu, sigma)
    assert bid is not None and 100_000 <= bid < 3_000_000
    priced = price(3_000_000, 100_000, 5_000_000, 1, 0.2, 1, table, segment, params)  # type: ignore[arg-type]
    assert not isinstance(priced, str)
    assert priced.p_win == pytest.approx(table.p_win(segment, priced.price), rel=1e-9)
    unknown = MarketTable(MarketSegment(mu, sigma))
    assert unknown.params("other") == (mu, sigma)
