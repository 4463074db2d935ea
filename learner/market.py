"""The market-price model: a censored log-normal of the competing price per market segment.

What we see of the highest competing bid M (micros CPM) after each of our bids b:

- a second-price win: the clearing price, which is M itself: an exact observation;
- a first-price win: only that M < b (left-censored at b);
- a loss: M itself when the exchange sends the winning price, else only M > b (right-censored).

Fitting a normal to ln M from wins alone is biased low (we win where the market is cheap);
treating losses as exact at the bid is biased too. The maximum-likelihood estimate of a normal
under censoring is found by EM: the E-step replaces each censored ln M by its expected moments
under the current (mu, sigma), truncated at the censoring point; the M-step is the ordinary
mean and variance of the completed data.

Evidence is kept bounded: exact observations as sufficient statistics (weight, sum, sum of
squares of ln M), censoring points binned in ln space (``bin_width``; each bin keeps its
weight and weighted sum, so its centre is the mean of what fell into it). A segment therefore
costs at most a few hundred bins whatever the traffic. ``decay`` multiplies every weight, so old
evidence fades as the market moves.

Segments with little evidence are shrunk towards the overall estimate: the M-step adds
``shrink`` pseudo-observations drawn from the overall (mu, sigma) (a conjugate prior centred on
the pooled fit); the overall fit itself gets ``prior_weight`` pseudo-observations of the prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from fleet.model import MarketSegment, MarketTable
from learner.errors import BadParameters

_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT2: Final = math.sqrt(2.0)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def mills(z: float) -> float:
    """phi(z) / Phi(z), stable far in the left tail."""
    if z < -25.0:
        z2 = z * z
        return -z / (1.0 - 1.0 / z2 + 3.0 / (z2 * z2))
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z) / _cdf(z)


def truncated_moments(mu: float, sigma: float, c: float, *, above: bool) -> tuple[float, float]:
    """E[x] and E[x^2] of x ~ N(mu, sigma^2) given x > c (``above``) or x < c."""
    a = (c - mu) / sigma
    if above:
        lam = mills(-a)
        mean = mu + sigma * lam
        var = sigma * sigma * max(1.0 + a * lam - lam * lam, 1e-9)
    else:
        lam = mills(a)
        mean = mu - sigma * lam
        var = sigma * sigma * max(1.0 - a * lam - lam * lam, 1e-9)
    return mean, var + mean * mean


@dataclass(frozen=True, slots=True)
class MarketSettings:
    prior_median_micros: int = 1_000_000
    prior_sigma: float = 1.0
    prior_weight: float = 5.0
    shrink: float = 20.0
    min_sigma: float = 0.05
    bin_width: float = 0.02
    max_segments: int = 20_000
    iterations: int = 200
    tolerance: float = 1e-7

    def __post_init__(self) -> None:
        if self.prior_median_micros <= 0 or self.prior_sigma <= 0 or self.min_sigma <= 0:
            raise BadParameters("market prior median, prior sigma and min sigma must be > 0")
        if self.prior_weight < 0 or self.shrink < 0:
            raise BadParameters("market prior weight and shrink must be 0 or more")
        if not 0 < self.bin_width <= 1 or self.max_segments < 1 or self.iterations < 1:
            raise BadParameters("market bin width, segment cap or iterations out of range")


@dataclass(slots=True)
class SegmentEvidence:
    exact: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # w, sum x, sum x^2
    above: dict[int, list[float]] = field(default_factory=dict)  # bin -> [w, sum w c]
    below: dict[int, list[float]] = field(default_factory=dict)

    @property
    def weight(self) -> float:
        return (
            self.exact[0]
            + sum(b[0] for b in self.above.values())
            + sum(b[0] for b in self.below.values())
        )

    def merge_into(self, other: SegmentEvidence) -> None:
        for k in range(3):
            other.exact[k] += self.exact[k]
        for mine, theirs in ((self.above, other.above), (self.below, other.below)):
            for b, (w, wc) in mine.items():
                slot = theirs.setdefault(b, [0.0, 0.0])
                slot[0] += w
                slot[1] += wc


def fit_censored(
    evidence: SegmentEvidence,
    prior_mu: float,
    prior_sigma: float,
    prior_weight: float,
    *,
    min_sigma: float,
    iterations: int,
    tolerance: float,
) -> tuple[float, float]:
    """(mu, sigma) of ln M maximising the censored likelihood plus the prior's
    pseudo-observations, by EM from the prior."""
    w0, s0, ss0 = evidence.exact
    above = [(w, wc / w) for w, wc in evidence.above.values() if w > 0]
    below = [(w, wc / w) for w, wc in evidence.below.values() if w > 0]
    total = w0 + sum(w for w, _ in above) + sum(w for w, _ in below) + prior_weight
    if total <= 0:
        return prior_mu, prior_sigma
    p1 = prior_weight * prior_mu
    p2 = prior_weight * (prior_sigma * prior_sigma + prior_mu * prior_mu)
    mu, sigma = prior_mu, prior_sigma
    if w0 > 0 and not above and not below:  # closed form: nothing censored
        iterations = 1
    for _ in range(iterations):
        m1, m2 = s0 + p1, ss0 + p2
        for w, c in above:
            e1, e2 = truncated_moments(mu, sigma, c, above=True)
            m1 += w * e1
            m2 += w * e2
        for w, c in below:
            e1, e2 = truncated_moments(mu, sigma, c, above=False)
            m1 += w * e1
            m2 += w * e2
        new_mu = m1 / total
        new_sigma = math.sqrt(max(m2 / total - new_mu * new_mu, min_sigma * min_sigma))
        done = abs(new_mu - mu) < tolerance and abs(new_sigma - sigma) < tolerance
        mu, sigma = new_mu, new_sigma
        if done:
            break
    return mu, sigma


class CensoredLogNormalMarket:
    """Evidence per segment, fitted on demand (``fit``) into a ``MarketTable``; the same
    observe methods as the bidder's market model (``bidder.pricing.MarketPriceModel``)."""

    def __init__(self, settings: MarketSettings | None = None) -> None:
        self.settings = settings or MarketSettings()
        self.segments: dict[str, SegmentEvidence] = {}
        self.dropped_segments = 0
        s = self.settings
        self._table = MarketTable(
            MarketSegment(math.log(s.prior_median_micros), s.prior_sigma, 0.0), {}
        )

    @property
    def table(self) -> MarketTable:
        """The last fit."""
        return self._table

    def _evidence(self, segment: str) -> SegmentEvidence:
        ev = self.segments.get(segment)
        if ev is None:
            if len(self.segments) >= self.settings.max_segments:
                # the lightest tenth goes (the overall fit stands in for them best), at once,
                # so that a stream of new segments costs a sort per tenth, not a scan each
                drop = max(1, self.settings.max_segments // 10)
                by_weight = sorted(self.segments, key=lambda k: self.segments[k].weight)
                for name in by_weight[:drop]:
                    del self.segments[name]
                self.dropped_segments += drop
            ev = self.segments[segment] = SegmentEvidence()
        return ev

    def _censor(self, segment: str, price_micros: int, above: bool, weight: float) -> None:
        c = math.log(price_micros)
        ev = self._evidence(segment)
        bins = ev.above if above else ev.below
        slot = bins.setdefault(math.floor(c / self.settings.bin_width), [0.0, 0.0])
        slot[0] += weight
        slot[1] += weight * c

    def observe_exact(self, segment: str, price_micros: int, weight: float = 1.0) -> None:
        if price_micros <= 0 or not weight > 0:
            return
        x = math.log(price_micros)
        e = self._evidence(segment).exact
        e[0] += weight
        e[1] += weight * x
        e[2] += weight * x * x

    def observe_win(
        self, segment: str, price_micros: int, exact: bool = True, weight: float = 1.0
    ) -> None:
        """A win: ``exact`` when ``price`` is the competing price (a second-price clearing
        price); otherwise it is our first-price bid and the competing price was below it."""
        if price_micros <= 0 or not weight > 0:
            return
        if exact:
            self.observe_exact(segment, price_micros, weight)
        else:
            self._censor(segment, price_micros, False, weight)

    def observe_loss(self, segment: str, bid_micros: int, weight: float = 1.0) -> None:
        """A loss at ``bid`` without the winning price: the competing price was above it."""
        if bid_micros <= 0 or not weight > 0:
            return
        self._censor(segment, bid_micros, True, weight)

    def decay(self, factor: float) -> None:
        """Multiply all evidence by ``factor`` in (0, 1]; bins that fade away are dropped."""
        if not 0 < factor <= 1:
            raise BadParameters("decay factor must be in (0, 1]")
        if factor == 1:
            return
        for name in list(self.segments):
            ev = self.segments[name]
            ev.exact = [v * factor for v in ev.exact]
            for bins in (ev.above, ev.below):
                for b in list(bins):
                    slot = bins[b]
                    slot[0] *= factor
                    slot[1] *= factor
                    if slot[0] < 1e-6:
                        del bins[b]
            if ev.weight < 1e-6:
                del self.segments[name]

    def fit(self) -> MarketTable:
        s = self.settings
        pooled = SegmentEvidence()
        for ev in self.segments.values():
            ev.merge_into(pooled)
        g_mu, g_sigma = fit_censored(
            pooled,
            math.log(s.prior_median_micros),
            s.prior_sigma,
            s.prior_weight,
            min_sigma=s.min_sigma,
            iterations=s.iterations,
            tolerance=s.tolerance,
        )
        segments = {}
        for name, ev in self.segments.items():
            mu, sigma = fit_censored(
                ev,
                g_mu,
                g_sigma,
                s.shrink,
                min_sigma=s.min_sigma,
                iterations=s.iterations,
                tolerance=s.tolerance,
            )
            segments[name] = MarketSegment(mu, sigma, ev.weight)
        self._table = MarketTable(MarketSegment(g_mu, g_sigma, pooled.weight), segments)
        return self._table

    def params(self, segment: str) -> tuple[float, float]:
        return self._table.params(segment)

    def to_state(self) -> dict[str, Any]:
        return {
            "dropped": self.dropped_segments,
            "segments": {
                name: [ev.exact, list(ev.above.items()), list(ev.below.items())]
                for name, ev in self.segments.items()
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.dropped_segments = int(state["dropped"])
        self.segments = {
            name: SegmentEvidence(
                [float(v) for v in exact],
                {int(b): [float(w), float(wc)] for b, (w, wc) in above},
                {int(b): [float(w), float(wc)] for b, (w, wc) in below},
            )
            for name, (exact, above, below) in state["segments"].items()
        }
        self.fit()

    def p_win(self, segment: str, bid_micros: int) -> float:
        return self._table.p_win(segment, bid_micros)
