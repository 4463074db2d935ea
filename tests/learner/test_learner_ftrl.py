"""FTRL-Proximal against values worked out by hand from the paper's update, and the compiled
twin against the pure reference (to 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learner.errors import BadParameters
from learner.ftrl import FtrlParams, FtrlReference, Logistic, Squared, bias_for_rate, start_at

_ftrl = pytest.importorskip("learner._ftrl")  # `make test` builds it; see test_compiled_is_built


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_compiled_is_built() -> None:
    import learner._ftrl  # noqa: F401  (a silent fallback would hide a broken build)


IMPLS = [FtrlReference, _ftrl.Ftrl]


@pytest.mark.parametrize("impl", IMPLS)
def test_two_updates_by_hand(impl: type) -> None:
    m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.0, bits=4))
    # 1: every weight 0, p = 0.5; y = 1 so g = -0.5 for the feature and the bias
    assert m.learn_one([3], None, 1.0, 1.0) == pytest.approx(0.5, abs=1e-15)
    # sigma = (sqrt(0.25) - 0) / 0.5 = 1; z = -0.5 - 1 * 0; n = 0.25
    z, n = -0.5, 0.25
    w = -z / ((1.0 + math.sqrt(n)) / 0.5)  # = 1/6
    assert w == pytest.approx(1 / 6)
    p = sig(2 * w)  # feature + bias
    assert m.learn_one([3 + 16 * 7], None, 0.0, 1.0) == pytest.approx(p, abs=1e-15)  # masked
    g = p
    sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / 0.5
    z2, n2 = z + g - sigma * w, n + g * g
    for slot in (3, 16):  # the feature and the bias
        assert m.state[slot, 0] * m.scale == pytest.approx(z2, abs=1e-15)
        assert m.state[slot, 1] * m.scale == pytest.approx(n2, abs=1e-15)
    bias, weights = m.weights()
    want = -z2 / ((1.0 + math.sqrt(n2)) / 0.5)
    assert bias == pytest.approx(want, abs=1e-15)
    assert weights[3] == pytest.approx(want, abs=1e-15)
    assert np.count_nonzero(weights) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_l1_keeps_small_weights_at_zero_and_l2_shrinks(impl: type) -> None:
    m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=1.0, l2=0.0, bits=4))
    m.learn_one([3], None, 1.0, 1.0)  # z = -0.5: inside the l1 ball
    assert m.predict_one([3]) == 0.5
    m.learn_one([3], None, 1.0, 1.0)  # p = 0.5 again, g = -0.5
    n = 0.25
    sigma = (math.sqrt(0.5) - math.sqrt(n)) / 0.5
    z = -0.5 - 0.5  # w was 0, so sigma * w adds nothing
    assert m.state[3, 0] == pytest.approx(z)
    assert sigma > 0
    # |z| = 1 = l1: still zero
    assert m.weights()[1][3] == 0.0
    m2 = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.25, l2=2.0, bits=4))
    m2.learn_one([3], None, 1.0, 1.0)
    want = -(-0.5 + 0.25) / ((1.0 + 0.5) / 0.5 + 2.0)
    assert m2.weights()[1][3] == pytest.approx(want)


@pytest.mark.parametrize("impl", IMPLS)
def test_importance_weight_scales_the_gradient(impl: type) -> None:
    m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.0, bits=4))
    m.learn_one([5], None, 0.0, 4.0)  # g = 4 * 0.5 = 2
    assert m.state[5, 1] == pytest.approx(4.0)
    sigma = 2.0 / 0.5
    assert m.state[5, 0] == pytest.approx(2.0 - sigma * 0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_feature_values_multiply(impl: type) -> None:
    m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.0, bits=4))
    m.learn_one([5, 6], [2.0, 0.5], 1.0, 1.0)  # g = -0.5; g_i = -1, -0.25
    assert m.state[5, 1] == pytest.approx(1.0)
    assert m.state[6, 1] == pytest.approx(0.0625)
    _, w = m.weights()
    p = sig(2.0 * w[5] + 0.5 * w[6] + m.weights()[0])
    assert m.predict_one([5, 6], [2.0, 0.5]) == pytest.approx(p)


@pytest.mark.parametrize("impl", IMPLS)
def test_decay_fades_z_and_n_lazily(impl: type) -> None:
    m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.0, bits=4, half_life=1.0))
    m.learn_one([3], None, 1.0, 1.0)  # decays first (nothing to decay), then z=-0.5, n=0.25
    assert m.scale == 0.5
    assert m.state[3, 0] * m.scale == pytest.approx(-0.5)
    # the second example sees z and n halved
    z, n = -0.25, 0.125
    w = -z / ((1.0 + math.sqrt(n)) / 0.5)
    assert m.learn_one([3], None, 1.0, 1.0) == pytest.approx(sig(2 * w))
    # an untouched slot stays untouched, a touched one is read at its decayed value
    assert m.state[4, 0] == 0.0
    m.learn_one([4], None, 1.0, 1.0)
    assert m.state[3, 1] * m.scale == pytest.approx((n + (1 - sig(2 * w)) ** 2) * 0.5, rel=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_renormalisation_keeps_the_true_state(impl: type) -> None:
    m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.0, bits=4, half_life=1.0))
    m.learn_one([3], None, 1.0, 1.0)
    before = m.state[3, 0] * m.scale
    for _ in range(70):  # 2**-70: the array is rescaled once on the way
        m.learn_one([2], None, 0.0, 1.0)
    assert m.scale > 2.0**-64
    assert m.state[3, 0] * m.scale == pytest.approx(before * 2.0**-70, rel=1e-12)


def test_squared_loss_is_linear_regression() -> None:
    for impl in IMPLS:
        m = impl(FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.0, bits=6, loss="squared"))
        rng = np.random.default_rng(3)
        for _ in range(3000):
            a, b = rng.random(2)
            m.learn_one([1, 2], [a, b], 2.0 * a - 1.0 * b + 0.5, 1.0)
        bias, w = m.weights()
        assert w[1] == pytest.approx(2.0, abs=0.05)
        assert w[2] == pytest.approx(-1.0, abs=0.05)
        assert bias == pytest.approx(0.5, abs=0.05)


def test_losses() -> None:
    assert Logistic().loss(0.25, 1.0) == pytest.approx(-math.log(0.25))
    assert Logistic().link(1000.0) < 1.0
    assert Squared().loss(3.0, 1.0) == 2.0


def test_bad_parameters_say_which() -> None:
    with pytest.raises(BadParameters, match="alpha"):
        FtrlParams(alpha=0.0)
    with pytest.raises(BadParameters, match="bits"):
        FtrlParams(bits=30)
    with pytest.raises(BadParameters, match="loss"):
        FtrlParams(loss="hinge")


def _stream(rows: int, seed: int, *, with_values: bool):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 12, size=rows)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    hashes = rng.integers(0, 2**32, size=int(offsets[-1]), dtype=np.uint32)
    hashes[::7] = 12345  # a popular feature, and repeats within rows
    labels = (rng.random(rows) < 0.2).astype(np.float64)
    weights = np.where(labels > 0, 1.0, rng.choice([1.0, 4.0], size=rows))
    values = rng.normal(1.0, 0.5, size=hashes.shape[0]) if with_values else None
    return hashes, offsets, labels, weights, values


@pytest.mark.parametrize(
    "params",
    [
        FtrlParams(alpha=0.1, beta=1.0, l1=1.0, l2=1.0, bits=8),
        FtrlParams(alpha=0.3, beta=0.5, l1=0.1, l2=0.0, bits=6, half_life=20.0),
        FtrlParams(alpha=0.05, beta=2.0, l1=0.0, l2=5.0, bits=10, loss="squared"),
    ],
)
@pytest.mark.parametrize("with_values", [False, True])
def test_compiled_agrees_with_reference(params: FtrlParams, with_values: bool) -> None:
    hashes, offsets, labels, weights, values = _stream(3000, 7, with_values=with_values)
    ref, fast = FtrlReference(params), _ftrl.Ftrl(params)
    p_ref = ref.learn(hashes, offsets, labels, weights, values)
    p_fast = fast.learn(hashes, offsets, labels, weights, values)
    np.testing.assert_allclose(p_fast, p_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        fast.state * fast.scale, ref.state * ref.scale, rtol=1e-9, atol=1e-12
    )
    assert fast.examples == ref.examples == 3000
    b_ref, w_ref = ref.weights()
    b_fast, w_fast = fast.weights()
    np.testing.assert_allclose(w_fast, w_ref, rtol=1e-9, atol=1e-12)
    assert b_fast == pytest.approx(b_ref, rel=1e-9)
    q_ref = ref.predict(hashes[:500], offsets[:40], None if values is None else values[:500])
    q_fast = fast.predict(hashes[:500], offsets[:40], None if values is None else values[:500])
    np.testing.assert_allclose(q_fast, q_ref, rtol=1e-9, atol=1e-12)


def test_compiled_refuses_bad_batches() -> None:
    m = _ftrl.Ftrl(FtrlParams(bits=4))
    h = np.array([1, 2, 3], dtype=np.uint32)
    with pytest.raises(ValueError, match="offsets"):
        m.learn(h, np.array([0, 5], dtype=np.int64), np.zeros(1), np.ones(1))
    with pytest.raises(ValueError, match="decrease"):
        m.learn(h, np.array([0, 2, 1], dtype=np.int64), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="label"):
        m.learn(h, np.array([0, 3], dtype=np.int64), np.zeros(2), np.ones(1))
    with pytest.raises(ValueError, match="value"):
        m.learn(h, np.array([0, 3], dtype=np.int64), np.zeros(1), np.ones(1), np.ones(2))
    assert m.examples == 0


def test_state_round_trip_continues_identically() -> None:
    params = FtrlParams(alpha=0.2, bits=8, half_life=50.0)
    hashes, offsets, labels, weights, _ = _stream(2000, 11, with_values=False)
    a = _ftrl.Ftrl(params)
    a.learn(hashes, offsets[:1001], labels[:1000], weights[:1000])
    b = FtrlReference(params)
    b.set_state(a.get_state())
    rest = offsets[1000:] - offsets[1000]
    h2 = hashes[offsets[1000] :]
    np.testing.assert_allclose(
        b.learn(h2, rest, labels[1000:], weights[1000:]),
        a.learn(h2, rest, labels[1000:], weights[1000:]),
        rtol=1e-9,
    )
    with pytest.raises(BadParameters):
        FtrlReference(FtrlParams(bits=9)).set_state(a.get_state())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "params",
    [
        FtrlParams(alpha=0.05, beta=1.0, l1=1.0, l2=1.0, bits=6),
        FtrlParams(alpha=0.1, beta=0.5, l1=0.0, l2=30.0, bits=6, half_life=500.0),
    ],
)
def test_warm_start_predicts_the_prior_and_stays_there(impl: type, params: FtrlParams) -> None:
    rate = 0.01
    m = impl(params)
    start_at(m, bias_for_rate(rate))
    bias, w = m.weights()
    assert bias == pytest.approx(math.log(rate / (1 - rate)), abs=1e-12)
    assert not w.any()
    assert m.predict_one([5]) == pytest.approx(rate, abs=1e-12)
    # a stream at the prior rate (1 positive in 100) leaves the prediction near it; a cold
    # start after the same 100 examples is still far above it
    cold = impl(params)
    for k in range(100):
        y = 1.0 if k == 50 else 0.0
        m.learn_one([k % 7], None, y, 1.0)
        cold.learn_one([k % 7], None, y, 1.0)
    warm_p, cold_p = m.predict_one([60]), cold.predict_one([60])
    assert abs(math.log(warm_p / rate)) < abs(math.log(cold_p / rate))
    assert 0.2 * rate < warm_p < 5 * rate


@pytest.mark.parametrize("impl", IMPLS)
def test_warm_start_only_before_learning(impl: type) -> None:
    m = impl(FtrlParams(bits=4))
    m.learn_one([1], None, 1.0, 1.0)
    with pytest.raises(BadParameters):
        start_at(m, -4.0)
    with pytest.raises(BadParameters):
        bias_for_rate(1.0)
