from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from bidder.openrtb import Imp
from bidder.scoring import (
    FeatureRow,
    HashedLinearModel,
    PriorModel,
    candidate_features,
    cross_prefixes,
    crosses,
    features_for,
    inventory_key,
    predict_all,
    request_features,
    static_features,
    value_cpm_micros,
    values_cpm_micros,
)
from bidder.targeting import RequestView
from fleet import model as model_file
from fleet.config import Campaign, Creative, GoalType
from fleet.features import hash_features
from fleet.model import ModelFormatError

CAMPAIGN = Campaign(
    id=12,
    advertiser_id=3,
    name="c",
    goal_type="CPI",
    goal_price_micros=2_000_000,
    max_bid_cpm_micros=9_000_000,
    daily_budget_micros=1,
    total_budget_micros=1,
)
CREATIVE = Creative(
    id=58, campaign_id=12, format="banner", w=320, h=50, markup="", adomain=("a.com",)
)


def view(personalize: bool = True) -> RequestView:
    return RequestView(
        country="USA",
        os="ios",
        device_type=4,
        connection_type=2,
        inventory="app",
        app_bundle="com.example.x",
        publisher_id="p1",
        categories=frozenset({"IAB9", "IAB9-30"}),
        segments=frozenset({"seg-1", "seg-2"}) if personalize else frozenset(),
        personalize=personalize,
        local_hour=13,
        weekday=2,
        exchange="x",
    )


def test_feature_strings_are_stable_and_privacy_aware() -> None:
    imp = Imp(id="1")
    feats = features_for(view(), CAMPAIGN, CREATIVE, imp)
    assert feats[:3] == ["country=USA", "os=ios", "dt=4"]
    assert "app=com.example.x" in feats and "cat=IAB9-30" in feats and "seg=seg-1" in feats
    assert "campaign^inv=12^com.example.x" in feats and "size^inv=320x50^com.example.x" in feats
    assert all("=" in f for f in feats)
    private = features_for(view(personalize=False), CAMPAIGN, CREATIVE, imp)
    assert not any(f.startswith("seg=") for f in private)
    # the bid path's precomputed parts give exactly the same strings
    v = view()
    fast = [
        *static_features(CAMPAIGN, CREATIVE),
        *crosses(cross_prefixes(CAMPAIGN, CREATIVE), v, inventory_key(v)),
    ]
    assert fast == candidate_features(v, CAMPAIGN, CREATIVE)
    assert feats == request_features(v, imp) + fast


@pytest.mark.parametrize(
    ("goal", "price", "p_click", "p_install", "value"),
    [
        ("CPM", 2_000_000, 0.5, 0.5, 2_000_000),
        ("CPC", 500_000, 0.01, 0.5, 5_000_000),
        ("CPI", 4_000_000, 0.01, 0.03, 1_200_000),
        ("CPA", 10_000_000, 0.02, 0.01, 2_000_000),
        ("CPC", 500_000, 0.0, 0.5, 0),
        ("CPC", 500_000, float("nan"), 0.5, 0),
        ("CPC", 500_000, 3.0, 0.5, 500_000_000),  # probabilities are capped at 1
    ],
)
def test_value_per_thousand_impressions(
    goal: str, price: int, p_click: float, p_install: float, value: int
) -> None:
    assert value_cpm_micros(goal, price, p_click, p_install) == value  # type: ignore[arg-type]


def test_batch_values_equal_one_at_a_time() -> None:
    inf, nan = float("inf"), float("nan")
    probabilities = [0.0, -0.1, 1e-9, 0.0123, 0.5, 1.0, 1.0000001, 3.0, inf, -inf, nan]
    goals: list[tuple[GoalType, int]] = []
    predictions: list[tuple[float, float]] = []
    for goal in ("CPM", "CPC", "CPI", "CPA"):
        for p_click in probabilities:
            for p_install in probabilities:
                goals.append((goal, 1_234_567))
                predictions.append((p_click, p_install))
    expected = [
        value_cpm_micros(g, v, pc, pi) for (g, v), (pc, pi) in zip(goals, predictions, strict=True)
    ]
    assert values_cpm_micros(goals, predictions) == expected
    assert values_cpm_micros([], []) == []


def test_prior_model_per_goal_and_campaign() -> None:
    m = PriorModel(per_goal={"CPI": (0.02, 0.05)}, per_campaign={7: (0.1, 0.2)}, version=3)
    assert m.version == 3
    assert m.predict(["campaign=1", "goal=CPC"]) == (0.01, 0.03)
    assert m.predict(["campaign=1", "goal=CPI"]) == (0.02, 0.05)
    assert m.predict(["campaign=7", "goal=CPI"]) == (0.1, 0.2)
    rows = [FeatureRow(("campaign=7", "goal=CPM"), []), FeatureRow(("campaign=2", "goal=CPI"), [])]
    assert predict_all(m, [], rows) == [(0.1, 0.2), (0.02, 0.05)]
    assert predict_all(PriorModel(), [], rows) == [(0.01, 0.03)] * 2


def _model(bits: int = 12, seed: int = 9) -> HashedLinearModel:
    rng = np.random.default_rng(4)
    return HashedLinearModel(
        rng.normal(0, 0.3, 1 << bits).astype(np.float32),
        rng.normal(0, 0.3, 1 << bits).astype(np.float32),
        -4.0,
        -3.0,
        bits=bits,
        seed=seed,
        version=17,
    )


def test_hashed_model_is_logistic_over_hashed_features() -> None:
    m = _model()
    feats = ["country=USA", "os=ios", "campaign=12"]
    idx = hash_features(feats, 12, 9)
    zc = -4.0 + float(m.weights[0, idx].astype(np.float64).sum())
    zi = -3.0 + float(m.weights[1, idx].astype(np.float64).sum())
    p_click, p_install = m.predict(feats)
    assert p_click == pytest.approx(1 / (1 + np.exp(-zc)), rel=1e-6)
    assert p_install == pytest.approx(1 / (1 + np.exp(-zi)), rel=1e-6)


def test_batch_prediction_equals_one_by_one() -> None:
    m = _model()
    v = view()
    shared = request_features(v, Imp(id="1"))
    rows = [
        FeatureRow(
            static_features(CAMPAIGN, c), crosses(cross_prefixes(CAMPAIGN, c), v, "com.example.x")
        )
        for c in (
            CREATIVE,
            Creative(
                id=59, campaign_id=12, format="video", w=640, h=360, markup="", adomain=("a",)
            ),
        )
    ]
    for _ in range(2):  # cold, then from the memo tables
        batch = m.predict_batch(shared, rows)
        for row, (pc, pi) in zip(rows, batch, strict=True):
            one = m.predict(shared + row.all())
            assert pc == pytest.approx(one[0], rel=1e-5) and pi == pytest.approx(one[1], rel=1e-5)


def test_model_bytes_round_trip() -> None:
    m = _model()
    data = m.to_bytes()
    assert len(data) == 28 + 2 * 4 * 4096 + 4
    assert data[:4] == b"RTBM"
    back = HashedLinearModel.from_bytes(data)
    assert (back.bits, back.seed, back.version) == (12, 9, 17)
    assert back.click_bias == pytest.approx(-4.0) and back.install_bias == pytest.approx(-3.0)
    assert np.array_equal(back.weights, m.weights)
    assert back.predict(["a=1", "b=2"]) == m.predict(["a=1", "b=2"])


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\0",  # too long
        lambda d: b"XXXX" + d[4:],  # magic
        lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:],  # a flipped bit: checksum
        lambda d: _recrc(d[:4] + struct.pack("<H", 2) + d[6:-4]),  # format version
        lambda d: _recrc(d[:6] + bytes([40]) + d[7:-4]),  # bits out of range
        lambda d: _recrc(d[:7] + bytes([3]) + d[8:-4]),  # heads
        lambda d: _recrc(d[:28] + struct.pack("<f", float("nan")) + d[32:-4]),  # NaN weight
        lambda d: b"",
    ],
)
def test_bad_model_bytes_are_refused(mangle: object) -> None:
    data = _model().to_bytes()
    with pytest.raises(ModelFormatError):
        HashedLinearModel.from_bytes(mangle(data))  # type: ignore[operator]


def test_zero_model_and_shape_check() -> None:
    z = HashedLinearModel.zeros(bits=4, version=2)
    assert z.predict(["x"]) == (0.5, 0.5) and z.version == 2
    with pytest.raises(ModelFormatError):
        HashedLinearModel(np.zeros(8, np.float32), np.zeros(16, np.float32), bits=4)


def test_the_bidder_reads_the_kernels_model_file_and_predicts_as_its_reference() -> None:
    """The learner writes fleet.model files; the bidder's model loads them and agrees with the
    kernel's reference predict (its own faster paths are held to predict elsewhere)."""
    m = _model()
    f = model_file.decode(m.to_bytes())
    back = HashedLinearModel.from_file(f)
    assert back.to_bytes() == model_file.encode(f) == m.to_bytes()
    for features in (["a=1", "b=2"], ["country=USA", "campaign=3", "campaign^hour=3^12"], []):
        assert back.predict(features) == model_file.predict(f, features) == m.predict(features)
