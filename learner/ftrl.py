"""FTRL-Proximal per coordinate (McMahan et al., "Ad Click Prediction: a View from the
Trenches", KDD 2013, algorithm 1): the pure-Python reference of ``learner._ftrl``.

State: for each of the 2**bits hash slots, and one more for the bias, the pair (z, n), stored
interleaved in one float64 array of shape (2**bits + 1, 2) so that a coordinate's two numbers
share a cache line: 16 bytes per slot. The weight is never stored; it is computed lazily from
(z, n) when the coordinate is read:

    w = 0                                                  if |z| <= l1
    w = -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2)   otherwise

One example (indices i with values x_i, label y, importance weight c):

    p = link(sum_i w_i x_i + w_bias)
    g = c * dloss/dz(p, y)                    (logistic: p - y)
    for each i:  g_i = g x_i
                 sigma_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha
                 z_i += g_i - sigma_i w_i
                 n_i += g_i^2

The importance weight ``c`` is 1/rate for negatives kept with probability ``rate``, so that
subsampled negatives still give unbiased gradients.

Decay (``half_life`` in examples, 0 for none): before each example every z and n is multiplied
by gamma = 2**(-1/half_life), so old evidence fades and a coordinate that has not been seen in
a while learns fast again. Multiplying 2**bits numbers per example is out of the question;
instead the stored pair is (z, n) / S with one global scale S that is multiplied by gamma per
example, and a coordinate's true (z, n) is (z, n)_stored * S, computed when it is read. This is
the per-coordinate lazy decay (each coordinate brought to the present only when touched) without
a per-coordinate timestamp. When S falls under 2**-64 the whole array is multiplied by S once
and S is reset to 1, which keeps the stored numbers in range.

A feature index that appears twice in one example counts twice in the sum (as in the bidder,
which adds the weight of every feature string it hashes) and is updated twice, each time with
the weight computed before the update. Indices are full 32-bit hashes; the estimator masks them
to its own ``bits``, so one hashing serves a grid of estimators with different sizes.

The compiled twin must agree with this module to 1e-9 (tests/learner/test_learner_ftrl.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from learner.errors import BadParameters

RENORMALISE_BELOW: Final = 2.0**-64
Z_CLAMP: Final = 35.0  # the logistic link saturates well before this
P_CLIP: Final = 1e-15  # probabilities kept inside (0, 1) for the log loss

LOGISTIC: Final = 0
SQUARED: Final = 1


class Loss(Protocol):
    """A loss with its link: ``link`` maps the linear score to the prediction, ``gradient`` is
    d loss / d score at that prediction, ``code`` names it for the compiled twin."""

    name: str
    code: int

    def link(self, z: float) -> float: ...

    def gradient(self, p: float, y: float) -> float: ...

    def loss(self, p: float, y: float) -> float: ...


class Logistic:
    """Log loss with the logistic link (labels 0/1): gradient p - y."""

    name = "logistic"
    code = LOGISTIC

    def link(self, z: float) -> float:
        z = min(max(z, -Z_CLAMP), Z_CLAMP)
        return 1.0 / (1.0 + math.exp(-z))

    def gradient(self, p: float, y: float) -> float:
        return p - y

    def loss(self, p: float, y: float) -> float:
        p = min(max(p, P_CLIP), 1.0 - P_CLIP)
        return -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


class Squared:
    """Half squared error with the identity link: gradient p - y."""

    name = "squared"
    code = SQUARED

    def link(self, z: float) -> float:
        return z

    def gradient(self, p: float, y: float) -> float:
        return p - y

    def loss(self, p: float, y: float) -> float:
        return 0.5 * (p - y) * (p - y)


LOSSES: Final[dict[str, Loss]] = {"logistic": Logistic(), "squared": Squared()}


@dataclass(frozen=True, slots=True)
class FtrlParams:
    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 1.0
    l2: float = 1.0
    bits: int = 20
    half_life: float = 0.0  # in examples; 0: no decay
    loss: str = "logistic"

    def __post_init__(self) -> None:
        problems = []
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            problems.append("alpha must be a positive number")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            problems.append("beta must be 0 or more")
        if not (self.l1 >= 0 and math.isfinite(self.l1)):
            problems.append("l1 must be 0 or more")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            problems.append("l2 must be 0 or more")
        if not 1 <= self.bits <= 28:
            problems.append("bits must be between 1 and 28")
        if not (self.half_life >= 0 and math.isfinite(self.half_life)):
            problems.append("half_life must be 0 (no decay) or a positive number of examples")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}")
        if problems:
            raise BadParameters("; ".join(problems))

    @property
    def gamma(self) -> float:
        """The per-example decay factor of z and n (1.0: none)."""
        return 2.0 ** (-1.0 / self.half_life) if self.half_life > 0 else 1.0

    @property
    def slots(self) -> int:
        """Rows of the state: the hash slots and the bias."""
        return (1 << self.bits) + 1

    def describe(self) -> str:
        return (
            f"a={self.alpha:g} b={self.beta:g} l1={self.l1:g} l2={self.l2:g} "
            f"bits={self.bits} hl={self.half_life:g} {self.loss}"
        )


@dataclass(frozen=True, slots=True)
class FtrlState:
    """Everything an estimator needs to continue exactly where it stopped."""

    params: FtrlParams
    state: npt.NDArray[np.float64]  # (slots, 2): z, n (divided by scale)
    scale: float
    examples: int


def weights_of(
    z: npt.NDArray[np.float64], n: npt.NDArray[np.float64], params: FtrlParams
) -> npt.NDArray[np.float64]:
    """The lazy weights of true (already scaled) z and n, vectorised."""
    shrunk = np.sign(z) * np.maximum(np.abs(z) - params.l1, 0.0)
    return -shrunk / ((params.beta + np.sqrt(n)) / params.alpha + params.l2)


class FtrlReference:
    """FTRL-Proximal in plain Python, one coordinate at a time."""

    def __init__(self, params: FtrlParams, loss: Loss | None = None) -> None:
        self.params = params
        self.loss = loss if loss is not None else LOSSES[params.loss]
        self.state = np.zeros((params.slots, 2), dtype=np.float64)
        self.scale = 1.0
        self.examples = 0
        self._mask = (1 << params.bits) - 1
        self._bias = 1 << params.bits
        self._gamma = params.gamma

    @property
    def nbytes(self) -> int:
        return int(self.state.nbytes)

    def _weight(self, z: float, n: float) -> float:
        p = self.params
        if abs(z) <= p.l1:
            return 0.0
        return -(z - math.copysign(p.l1, z)) / ((p.beta + math.sqrt(n)) / p.alpha + p.l2)

    def _slots(self, indices: Sequence[int]) -> list[int]:
        return [int(i) & self._mask for i in indices] + [self._bias]

    def _score(self, slots: list[int], values: list[float]) -> tuple[float, list[float]]:
        s, state, scale = 0.0, self.state, self.scale
        ws = []
        for k, x in zip(slots, values, strict=True):
            w = self._weight(float(state[k, 0]) * scale, float(state[k, 1]) * scale)
            ws.append(w)
            s += w * x
        return s, ws

    def predict_one(self, indices: Sequence[int], values: Sequence[float] | None = None) -> float:
        slots = self._slots(indices)
        xs = [1.0] * len(indices) if values is None else [float(v) for v in values]
        s, _ = self._score(slots, [*xs, 1.0])
        return self.loss.link(s)

    def learn_one(
        self,
        indices: Sequence[int],
        values: Sequence[float] | None = None,
        label: float = 0.0,
        weight: float = 1.0,
    ) -> float:
        """Learn from one example; returns the prediction made before learning from it."""
        if self._gamma != 1.0:
            self.scale *= self._gamma
            if self.scale < RENORMALISE_BELOW:
                self.state *= self.scale
                self.scale = 1.0
        slots = self._slots(indices)
        xs = [1.0] * len(indices) if values is None else [float(v) for v in values]
        xs.append(1.0)
        s, ws = self._score(slots, xs)
        p = self.loss.link(s)
        g = weight * self.loss.gradient(p, label)
        state, scale, alpha = self.state, self.scale, self.params.alpha
        for k, x, w in zip(slots, xs, ws, strict=True):
            gi = g * x
            n = float(state[k, 1]) * scale
            sigma = (math.sqrt(n + gi * gi) - math.sqrt(n)) / alpha
            state[k, 0] += (gi - sigma * w) / scale
            state[k, 1] += gi * gi / scale
        self.examples += 1
        return p

    def learn(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        labels: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Learn from rows ``hashes[offsets[r]:offsets[r+1]]`` in order; the progressive
        predictions (each made before its row was learnt)."""
        rows = len(offsets) - 1
        out = np.empty(rows, dtype=np.float64)
        for r in range(rows):
            a, b = int(offsets[r]), int(offsets[r + 1])
            xs = None if values is None else values[a:b].tolist()
            out[r] = self.learn_one(hashes[a:b].tolist(), xs, float(labels[r]), float(weights[r]))
        return out

    def predict(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]:
        rows = len(offsets) - 1
        out = np.empty(rows, dtype=np.float64)
        for r in range(rows):
            a, b = int(offsets[r]), int(offsets[r + 1])
            xs = None if values is None else values[a:b].tolist()
            out[r] = self.predict_one(hashes[a:b].tolist(), xs)
        return out

    def weights(self) -> tuple[float, npt.NDArray[np.float64]]:
        """(bias, the weights of the 2**bits hash slots)."""
        w = weights_of(self.state[:, 0] * self.scale, self.state[:, 1] * self.scale, self.params)
        return float(w[-1]), w[:-1]

    def get_state(self) -> FtrlState:
        return FtrlState(self.params, self.state.copy(), self.scale, self.examples)

    def set_state(self, state: FtrlState) -> None:
        check_state(state, self.params)
        self.state[:] = state.state
        self.scale = state.scale
        self.examples = state.examples


def bias_for_rate(rate: float) -> float:
    """The logistic bias whose prediction is ``rate`` (the logit)."""
    if not 0.0 < rate < 1.0:
        raise BadParameters("a prior rate must be in (0, 1)")
    return math.log(rate / (1.0 - rate))


class _Stateful(Protocol):
    params: FtrlParams

    def get_state(self) -> FtrlState: ...

    def set_state(self, state: FtrlState) -> None: ...


def start_at(estimator: _Stateful, bias: float) -> None:
    """Warm start: put the bias coordinate of an estimator that has learnt nothing where its
    weight is ``bias`` (with n = 0: z = -bias (beta / alpha + l2) - sign(bias) l1). FTRL-Proximal
    then keeps it there until the gradients say otherwise (each step's sigma w term re-centres
    z on the current weight), so a first model learnt from few positives starts from the prior
    rate instead of from 0.5. Raises BadParameters on an estimator that has learnt already."""
    state = estimator.get_state()
    if state.examples or state.state.any():
        raise BadParameters("only an estimator that has learnt nothing can be warm-started")
    p = estimator.params
    if bias == 0.0:
        return
    z = -bias * (p.beta / p.alpha + p.l2) - math.copysign(p.l1, bias)
    fresh = state.state.copy()
    fresh[-1, 0] = z / state.scale
    estimator.set_state(FtrlState(p, fresh, state.scale, 0))


def check_state(state: FtrlState, params: FtrlParams) -> None:
    if state.params != params:
        raise BadParameters(f"state of {state.params.describe()} for {params.describe()}")
    if state.state.shape != (params.slots, 2):
        raise BadParameters(f"state shape {state.state.shape}, expected {(params.slots, 2)}")
    if not (0.0 < state.scale <= 1.0) or state.examples < 0:
        raise BadParameters("state scale or example count out of range")
