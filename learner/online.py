"""The online learner: events in, a compiled sparse model out. A pure core: no clock, no
sockets; the service (or ``learner.train`` offline) feeds it events and asks for models.

    events ─▶ Joiner ─▶ examples per head ─▶ CSR batches ─▶ EstimatorGrid (click, install)
                    └─▶ price observations ─▶ CensoredLogNormalMarket
    export(version) ─▶ SparseModel: each head's chosen estimator + the fitted market table

Examples are buffered per head and learnt ``batch_examples`` at a time (every estimator of the
grid learns the same batch, hashed once). The inverse hash map is fed the features of one
example in ``inverse_every``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from fleet.events import AnyEvent
from fleet.features import SCORING_FEATURE_SET, SCORING_FEATURE_SET_VERSION
from fleet.model import PRIOR_CLICK_RATE, PRIOR_INSTALL_RATE, SparseHead, SparseModel
from learner.batch import to_batch
from learner.errors import BadParameters
from learner.ftrl import FtrlParams, bias_for_rate, start_at
from learner.grid import EstimatorGrid, GridSettings, Selection
from learner.inverse import InverseHashMap
from learner.join import HEADS, Example, Head, Joiner, JoinSettings, PriceObservation
from learner.market import CensoredLogNormalMarket, MarketSettings

# The feature strings the bidder computes (declared in the kernel, fleet.features); a bidder
# refuses a model of a feature set it does not compute.
FEATURE_SET: Final = SCORING_FEATURE_SET
FEATURE_SET_VERSION: Final = SCORING_FEATURE_SET_VERSION

DEFAULT_GRID: Final = (
    FtrlParams(alpha=0.05, beta=1.0, l1=1.0, l2=1.0, bits=20),
    FtrlParams(alpha=0.1, beta=1.0, l1=1.0, l2=1.0, bits=20),
    FtrlParams(alpha=0.2, beta=1.0, l1=0.5, l2=1.0, bits=20),
    FtrlParams(alpha=0.1, beta=1.0, l1=1.0, l2=1.0, bits=20, half_life=2_000_000.0),
)


@dataclass(frozen=True, slots=True)
class LearnerConfig:
    click_grid: tuple[FtrlParams, ...] = DEFAULT_GRID
    install_grid: tuple[FtrlParams, ...] = DEFAULT_GRID[:2]
    grid: GridSettings = field(default_factory=GridSettings)
    join: JoinSettings = field(default_factory=JoinSettings)
    market: MarketSettings = field(default_factory=MarketSettings)
    seed: int = 0  # the MurmurHash3 seed of the feature hashes (the bidder's model seed)
    market_half_life_s: float = 6 * 3600.0  # of the market evidence, in stream time; 0: none
    batch_examples: int = 4096
    inverse_capacity: int = 100_000
    inverse_every: int = 8
    feature_set: str = FEATURE_SET
    feature_set_version: int = FEATURE_SET_VERSION
    # where each head's estimators start (their bias at its logit): the bidder's priors
    click_prior: float = PRIOR_CLICK_RATE
    install_prior: float = PRIOR_INSTALL_RATE

    def __post_init__(self) -> None:
        for name in ("click_prior", "install_prior"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise BadParameters(f"{name} must be a rate in (0, 1)")
        if not self.click_grid or not self.install_grid:
            raise BadParameters("each head needs at least one estimator")
        if self.batch_examples < 1 or self.inverse_every < 1:
            raise BadParameters("batch_examples and inverse_every must be at least 1")
        if not 0 <= self.seed < 1 << 32:
            raise BadParameters("seed must be a 32-bit unsigned integer")
        if not self.market_half_life_s >= 0:
            raise BadParameters("market_half_life_s must be 0 (no decay) or more")


@dataclass(slots=True)
class _Pending:
    features: list[list[str]] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


class OnlineLearner:
    def __init__(self, config: LearnerConfig | None = None, pool: Executor | None = None) -> None:
        """``pool``: threads for the estimators of a grid to learn in parallel (the caller
        owns it and shuts it down)."""
        self.config = c = config or LearnerConfig()
        self.joiner = Joiner(c.join)
        self.grids: dict[Head, EstimatorGrid] = {
            "click": EstimatorGrid(c.click_grid, c.grid, pool=pool),
            "install": EstimatorGrid(c.install_grid, c.grid, pool=pool),
        }
        priors: dict[Head, float] = {"click": c.click_prior, "install": c.install_prior}
        for head, prior in priors.items():
            for estimator in self.grids[head].estimators:
                start_at(estimator, bias_for_rate(prior))
        self.market = CensoredLogNormalMarket(c.market)
        self.inverse = InverseHashMap(c.inverse_capacity)
        self.pending: dict[Head, _Pending] = {h: _Pending() for h in HEADS}
        self.learnt: dict[Head, int] = {h: 0 for h in HEADS}
        self.label_delays: list[float] = []  # since the last take_label_delays()
        self.inverse_tick = 0
        self.market_decayed_at: float | None = None  # stream time the market was decayed to

    # -- input --------------------------------------------------------------------------------

    def feed(self, event: AnyEvent) -> None:
        examples, prices = self.joiner.feed(event)
        self.observe_prices(prices)
        self.add_examples(examples)

    def feed_all(self, events: Iterable[AnyEvent]) -> None:
        for e in events:
            self.feed(e)

    def flush(self, now: float) -> None:
        """An idle stream at ``now``: settle closed windows and learn what is buffered."""
        self.add_examples(self.joiner.flush(now))
        self._decay_market()
        self.train()

    def drain(self) -> None:
        """The end of a finite stream: settle everything that waits and learn it."""
        self.add_examples(self.joiner.drain())
        self.train()

    def _decay_market(self) -> None:
        """Fade the market evidence with stream time, in steps of 1 % of the half-life."""
        half_life = self.config.market_half_life_s
        now = self.joiner.watermark
        if half_life <= 0 or now == -math.inf:
            return
        if self.market_decayed_at is None:
            self.market_decayed_at = now
            return
        elapsed = now - self.market_decayed_at
        if elapsed >= half_life / 100:
            self.market.decay(0.5 ** (elapsed / half_life))
            self.market_decayed_at = now

    def observe_prices(self, prices: Iterable[PriceObservation]) -> None:
        self._decay_market()
        market = self.market
        for p in prices:
            if p.kind == "exact":
                market.observe_exact(p.segment, p.price_micros)
            elif p.kind == "below":
                market.observe_win(p.segment, p.price_micros, exact=False)
            else:
                market.observe_loss(p.segment, p.price_micros)

    def add_examples(self, examples: Iterable[Example]) -> None:
        for e in examples:
            pending = self.pending[e.head]
            pending.features.append(e.features)
            pending.labels.append(e.label)
            pending.weights.append(e.weight)
            if e.label > 0:
                self.label_delays.append(e.label_delay)
            if len(pending) >= self.config.batch_examples:
                self._train(e.head)

    def train(self) -> None:
        """Learn every buffered example now."""
        for head in HEADS:
            self._train(head)

    def _train(self, head: Head) -> None:
        pending = self.pending[head]
        if not len(pending):
            return
        batch = to_batch(pending.features, pending.labels, pending.weights, self.config.seed)
        self.grids[head].learn(batch.hashes, batch.offsets, batch.labels, batch.weights)
        self.learnt[head] += batch.rows
        if head == "click":
            self._remember_names(pending.features, batch.hashes, batch.offsets)
        self.pending[head] = _Pending()

    def _remember_names(
        self,
        features: list[list[str]],
        hashes: npt.NDArray[np.uint32],
        offsets: npt.NDArray[np.int64],
    ) -> None:
        every = self.config.inverse_every
        start = (-self.inverse_tick) % every
        self.inverse_tick += len(features)
        for r in range(start, len(features), every):
            a, b = int(offsets[r]), int(offsets[r + 1])
            self.inverse.observe(features[r], hashes[a:b].tolist(), self.weight_of)

    # -- output -------------------------------------------------------------------------------

    def take_label_delays(self) -> list[float]:
        delays, self.label_delays = self.label_delays, []
        return delays

    def select(self, rng: np.random.Generator) -> dict[Head, Selection]:
        return {h: self.grids[h].select(rng) for h in HEADS}

    def weight_of(self, hashes: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]:
        """The chosen click estimator's weights at these full hashes."""
        est = self.grids["click"].best()
        _, w = est.weights()
        out: npt.NDArray[np.float64] = w[hashes & np.uint32((1 << est.params.bits) - 1)]
        return out

    def heaviest(self, k: int) -> list[tuple[str, float]]:
        return self.inverse.heaviest(k, self.weight_of)

    def export(self, version: int) -> SparseModel:
        """The chosen estimators and the market model as a sparse model. Heads of different
        sizes are written at the larger size (the smaller one's weights repeated), which
        gives every feature string the same weight it had."""
        chosen = {h: self.grids[h].best() for h in HEADS}
        bits = max(e.params.bits for e in chosen.values())
        heads = {}
        for h, est in chosen.items():
            bias, w = est.weights()
            if est.params.bits < bits:
                w = np.tile(w, 1 << (bits - est.params.bits))
            heads[h] = SparseHead.from_dense(bias, w)
        return SparseModel(
            version=version,
            bits=bits,
            seed=self.config.seed,
            feature_set=self.config.feature_set,
            feature_set_version=self.config.feature_set_version,
            click=heads["click"],
            install=heads["install"],
            market=self.market.fit(),
        )

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self.grids.values())
