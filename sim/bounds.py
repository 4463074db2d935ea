"""The report's oracle bounds: what share of a constant's excess log loss a model can reach
when it knows every term of the true p(click) (``sim.market.Market.p_click``) except the user's
latent interests, whose dot product with the campaign's is the largest term of the truth.

- *Without the user*: the oracle averages the interests over their prior, N(0, s^2 I) with s the
  population's ``LATENT_SD``. The interests enter only through u = latent . campaign, a normal
  N(0, s^2 |c|^2), so the mean of sigmoid(rest + u) is taken by Gauss-Hermite quadrature.
- *Knowing the user's segments* (as the request carries them, and only when privacy lets the
  bidder use them): the posterior mean of sigmoid(rest + u) given the segments. A user has
  segment j when directions[j] . latent + noise > threshold (``sim.population``), so the
  likelihood of a user's segment set is a product of normal CDFs; the posterior is drawn by
  importance sampling from prior draws shared by every user (``LatentPosterior``), keeping per
  user the draws that carry almost all the weight.

A request-based model cannot beat the second bound on average (it is the best prediction given
what the request may tell); no model of the fleet's features can beat the first without using
the segments. The pure functions take the market's parameters and arrays; no clock, no global
RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

GAUSS_HERMITE_NODES: Final = 40
KEEP_WEIGHT: Final = 0.999  # a user's draws kept: the fewest carrying this share of the weight


_erfc = np.frompyfunc(math.erfc, 1, 1)


def log_ndtr(z: F64) -> F64:
    """log P(N(0, 1) < z), per element (finite for |z| < 37)."""
    x = -np.asarray(z, dtype=np.float64) / math.sqrt(2.0)
    out: F64 = np.log(0.5 * np.asarray(_erfc(x), dtype=np.float64))
    return out


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def mean_without_user(rest: F64, spread: F64) -> F64:
    """E[sigmoid(rest + u)] for u ~ N(0, spread^2), per element (Gauss-Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(GAUSS_HERMITE_NODES)  # weight exp(-x^2 / 2)
    w = w / w.sum()
    z = rest[:, None] + spread[:, None] * x[None, :]
    out: F64 = _sigmoid(z) @ w
    return out


class LatentPosterior:
    """Prior draws of the latent interests and, per segment set, their normalised weights."""

    def __init__(
        self,
        directions: F64,
        *,
        latent_sd: float,
        noise_sd: float,
        threshold: float,
        rng: np.random.Generator,
        draws: int = 20_000,
    ) -> None:
        self.directions = np.asarray(directions, dtype=np.float64)
        dim = self.directions.shape[1]
        self.draws: F64 = rng.normal(0.0, latent_sd, size=(draws, dim))
        z = (self.draws @ self.directions.T - threshold) / noise_sd  # draws x segments
        self._log_in: F64 = log_ndtr(z)  # P(segment j | latent), in logs
        self._log_out: F64 = log_ndtr(-z)
        self._base: F64 = self._log_out.sum(axis=1)  # a user with no segment
        self._delta: F64 = self._log_in - self._log_out
        self._cache: dict[tuple[int, ...], tuple[F64, F64]] = {}

    def posterior(self, member: Sequence[int]) -> tuple[F64, F64]:
        """(draws, weights) of the posterior given exactly these segment indices: the draws
        carrying ``KEEP_WEIGHT`` of the importance weight, renormalised."""
        key = tuple(sorted(member))
        found = self._cache.get(key)
        if found is not None:
            return found
        log_w = self._base + (self._delta[:, list(key)].sum(axis=1) if key else 0.0)
        w = np.exp(log_w - log_w.max())
        order = np.argsort(w)[::-1]
        cum = np.cumsum(w[order])
        keep = order[: int(np.searchsorted(cum, KEEP_WEIGHT * cum[-1])) + 1]
        kept_w = w[keep] / w[keep].sum()
        found = (self.draws[keep], kept_w)
        self._cache[key] = found
        return found

    def effective_draws(self, member: Sequence[int]) -> float:
        """The importance sample's effective size for this segment set (1 / sum of w^2)."""
        _, w = self.posterior(member)
        return float(1.0 / np.sum(w * w))

    def mean_click(self, member: Sequence[int], rest: float, campaign: F64) -> float:
        """E[sigmoid(rest + latent . campaign) | the segments]."""
        draws, w = self.posterior(member)
        return float(_sigmoid(rest + draws @ campaign) @ w)


def share(truth: F64, prediction: F64) -> float:
    """Excess log loss of ``prediction`` over the truth, as a share of the best constant's (the
    mean truth): the report's measure (``sim.learning``)."""
    eps = 1e-12
    p = np.clip(truth, eps, 1 - eps)

    def cross(q: F64) -> float:
        q = np.clip(q, eps, 1 - eps)
        return float(np.mean(-(p * np.log(q) + (1 - p) * np.log(1 - q))))

    entropy = cross(p)
    constant = cross(np.full_like(p, float(p.mean()))) - entropy
    return (cross(prediction) - entropy) / constant if constant > 0 else math.nan
