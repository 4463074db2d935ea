"""A grid of estimators trained on the same stream, judged by progressive validation.

Every estimator predicts each example before it learns from it (``Ftrl.learn`` returns those
predictions), so its running log loss is an honest out-of-sample measure with no hold-out set.
Losses are kept per block of ``block_examples`` examples in a ring of ``window_blocks`` blocks
(weighted sums of log loss, weight, prediction and label per estimator), so memory does not grow
with the stream and old behaviour leaves the window.

Confidence intervals come from a block bootstrap over the window (blocks, not examples, are
resampled, which respects the correlation between neighbouring examples). The same resampled
blocks serve every estimator, so comparisons are paired. A challenger replaces the chosen
estimator only when its log loss is lower in at least ``confidence`` of the resamples' paired
differences (one-sided) and lower by at least ``min_gain`` (relative) in the point estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from learner.errors import BadParameters
from learner.ftrl import P_CLIP, FtrlParams, FtrlReference, FtrlState

SUMS: Final = 4  # per block: sum w*loss, sum w, sum w*p, sum w*y


class Estimator(Protocol):
    params: FtrlParams
    examples: int

    @property
    def nbytes(self) -> int: ...

    def learn(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        labels: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]: ...

    def predict(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]: ...

    def weights(self) -> tuple[float, npt.NDArray[np.float64]]: ...

    def get_state(self) -> FtrlState: ...

    def set_state(self, state: FtrlState) -> None: ...


def compiled_or_reference(params: FtrlParams) -> Estimator:
    """The compiled estimator when it is built, else the reference (only slower)."""
    try:
        from learner._ftrl import Ftrl
    except ImportError:  # pragma: no cover - `make build` builds it
        return FtrlReference(params)
    return Ftrl(params)


@dataclass(frozen=True, slots=True)
class GridSettings:
    block_examples: int = 2_000
    window_blocks: int = 100
    bootstrap_samples: int = 300
    confidence: float = 0.95
    min_blocks: int = 10
    min_gain: float = 0.001

    def __post_init__(self) -> None:
        if self.block_examples < 1 or self.window_blocks < 2 or self.bootstrap_samples < 10:
            raise BadParameters("grid block size, window or bootstrap samples too small")
        if not 0.5 < self.confidence < 1 or self.min_gain < 0:
            raise BadParameters("grid confidence must be in (0.5, 1), min_gain >= 0")
        if not 2 <= self.min_blocks <= self.window_blocks:
            raise BadParameters("grid min_blocks must be between 2 and window_blocks")


def log_losses(p: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    q = np.clip(p, P_CLIP, 1.0 - P_CLIP)
    out: npt.NDArray[np.float64] = -(y * np.log(q) + (1.0 - y) * np.log1p(-q))
    return out


def entropy(rate: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The log loss of always predicting the base rate."""
    r = np.clip(rate, P_CLIP, 1.0 - P_CLIP)
    out: npt.NDArray[np.float64] = -(r * np.log(r) + (1.0 - r) * np.log1p(-r))
    return out


@dataclass(frozen=True, slots=True)
class Interval:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.5f} [{self.low:.5f}, {self.high:.5f}]"


@dataclass(frozen=True, slots=True)
class EstimatorReport:
    index: int
    params: FtrlParams
    examples: int  # in the window
    log_loss: Interval
    normalised_entropy: Interval
    calibration: Interval  # sum of predictions / sum of labels (1 is calibrated)
    total_log_loss: float  # since the start


@dataclass(frozen=True, slots=True)
class Selection:
    chosen: int
    previous: int
    reports: list[EstimatorReport]

    @property
    def changed(self) -> bool:
        return self.chosen != self.previous


class ProgressiveValidation:
    """Block sums of the progressive losses of K estimators."""

    def __init__(self, estimators: int, settings: GridSettings) -> None:
        self.settings = settings
        self.k = estimators
        self.blocks = np.zeros((settings.window_blocks, estimators, SUMS))
        self.filled = 0  # complete blocks in the ring (<= window_blocks)
        self.head = 0  # the ring slot of the next complete block
        self.current = np.zeros((estimators, SUMS))
        self.in_current = 0
        self.total = np.zeros((estimators, SUMS))
        self.examples = 0

    def add(
        self,
        predictions: npt.NDArray[np.float64],
        labels: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
    ) -> None:
        """``predictions`` (K, rows), made before each row was learnt."""
        rows = labels.shape[0]
        losses = log_losses(predictions, labels[None, :]) * weights[None, :]
        wp = predictions * weights[None, :]
        wy = (labels * weights)[None, :]
        start = 0
        size = self.settings.block_examples
        while start < rows:
            end = min(rows, start + size - self.in_current)
            part = np.stack(
                [
                    losses[:, start:end].sum(axis=1),
                    np.full(self.k, weights[start:end].sum()),
                    wp[:, start:end].sum(axis=1),
                    np.full(self.k, wy[0, start:end].sum()),
                ],
                axis=1,
            )
            self.current += part
            self.total += part
            self.in_current += end - start
            if self.in_current == size:
                self.blocks[self.head] = self.current
                self.head = (self.head + 1) % self.settings.window_blocks
                self.filled = min(self.filled + 1, self.settings.window_blocks)
                self.current = np.zeros((self.k, SUMS))
                self.in_current = 0
            start = end
        self.examples += rows

    def window(self) -> npt.NDArray[np.float64]:
        """The complete blocks, (blocks, K, SUMS)."""
        return self.blocks[: self.filled] if self.filled < len(self.blocks) else self.blocks

    def bootstrap(
        self, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(point sums (K, SUMS), resampled sums (R, K, SUMS)) over the window's blocks."""
        w = self.window()
        if w.shape[0] == 0:  # no complete block yet: the partial one, without resampling
            w = self.current[None, :, :]
        idx = rng.integers(0, w.shape[0], size=(self.settings.bootstrap_samples, w.shape[0]))
        return w.sum(axis=0), w[idx].sum(axis=1)

    def reports(
        self, params: Sequence[FtrlParams], rng: np.random.Generator
    ) -> list[EstimatorReport]:
        point, boot = self.bootstrap(rng)
        lo_q, hi_q = (1 - self.settings.confidence) / 2, (1 + self.settings.confidence) / 2

        def interval(p: npt.NDArray[np.float64], b: npt.NDArray[np.float64], k: int) -> Interval:
            with np.errstate(invalid="ignore"):  # inf or nan where a resample has no label
                low, high = np.quantile(b[:, k], [lo_q, hi_q])
            return Interval(float(p[k]), float(low), float(high))

        def metrics(s: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
            with np.errstate(divide="ignore", invalid="ignore"):
                ll = s[..., 0] / s[..., 1]
                ne = ll / entropy(s[..., 3] / s[..., 1])
                cal = s[..., 2] / s[..., 3]
            return ll, ne, cal

        p_ll, p_ne, p_cal = metrics(point)
        b_ll, b_ne, b_cal = metrics(boot)
        examples = int(self.window().shape[0] * self.settings.block_examples) or self.in_current
        with np.errstate(divide="ignore", invalid="ignore"):
            totals = self.total[:, 0] / self.total[:, 1]
        return [
            EstimatorReport(
                k,
                params[k],
                examples,
                interval(p_ll, b_ll, k),
                interval(p_ne, b_ne, k),
                interval(p_cal, b_cal, k),
                float(totals[k]),
            )
            for k in range(self.k)
        ]

    def better(self, chosen: int, rng: np.random.Generator) -> int:
        """The challenger that beats ``chosen`` beyond the noise (the largest gain), or
        ``chosen``."""
        s = self.settings
        if self.filled < s.min_blocks:
            return chosen
        point, boot = self.bootstrap(rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            ll = point[:, 0] / point[:, 1]
            b_ll = boot[:, :, 0] / boot[:, :, 1]  # (R, K)
        gain = b_ll[:, chosen : chosen + 1] - b_ll  # > 0 where the challenger is better
        lower = np.quantile(gain, 1 - s.confidence, axis=0)
        best, best_gain = chosen, 0.0
        for k in range(self.k):
            point_gain = float(ll[chosen] - ll[k])
            if (
                k != chosen
                and math.isfinite(point_gain)
                and lower[k] > 0
                and point_gain >= s.min_gain * float(ll[chosen])
                and point_gain > best_gain
            ):
                best, best_gain = k, point_gain
        return best


class EstimatorGrid:
    """Estimators of one head on the same examples; ``chosen`` is the one exported."""

    def __init__(
        self,
        params: Sequence[FtrlParams],
        settings: GridSettings | None = None,
        factory: Callable[[FtrlParams], Estimator] = compiled_or_reference,
        pool: Executor | None = None,
    ) -> None:
        """With a ``pool`` (threads), the estimators learn a batch in parallel: the compiled
        loop runs without the GIL, and each estimator is touched by one thread at a time."""
        if not params:
            raise BadParameters("a grid needs at least one estimator")
        self.pool = pool
        self.settings = settings or GridSettings()
        self.params = list(params)
        self.estimators = [factory(p) for p in self.params]
        self.validation = ProgressiveValidation(len(self.params), self.settings)
        self.chosen = 0
        self.switches = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.estimators)

    def learn(
        self,
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
        labels: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """Each estimator learns the batch; their progressive predictions, (K, rows)."""
        if self.pool is not None and len(self.estimators) > 1:
            futures = [
                self.pool.submit(e.learn, hashes, offsets, labels, weights) for e in self.estimators
            ]
            preds = np.stack([f.result() for f in futures])
        else:
            preds = np.stack([e.learn(hashes, offsets, labels, weights) for e in self.estimators])
        self.validation.add(preds, labels, weights)
        return preds

    def select(self, rng: np.random.Generator) -> Selection:
        previous = self.chosen
        self.chosen = self.validation.better(previous, rng)
        if self.chosen != previous:
            self.switches += 1
        return Selection(self.chosen, previous, self.validation.reports(self.params, rng))

    def best(self) -> Estimator:
        return self.estimators[self.chosen]
