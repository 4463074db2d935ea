"""Synthetic click data with a known true probability, shaped like the bidder's features.

Each impression draws request fields (country, os, device type, app, publisher, hour) and a
campaign with one of its creatives, from skewed (Zipf-like) distributions as real traffic is.
The true click probability is logistic in per-value effects plus two interactions
(campaign x app, campaign x country), with the intercept set so that the base rate is about
``base_rate``. The feature strings are the bidder's (``name=value``, crosses
``a^b=x^y``), so the same hashing applies. Randomness comes only from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fleet.events import (
    AnyEvent,
    BidEvent,
    ClickEvent,
    ImpressionEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
)

# field -> (number of values, effect standard deviation, Zipf exponent)
FIELDS: Final = {
    "country": (30, 0.4, 1.2),
    "os": (3, 0.2, 0.8),
    "dt": (4, 0.3, 1.0),
    "app": (2000, 0.6, 1.1),
    "pub": (300, 0.3, 1.1),
    "hour": (24, 0.15, 0.0),
    "campaign": (60, 0.5, 0.9),
}
CREATIVES_PER_CAMPAIGN: Final = 4
INTERACTION_SD: Final = 0.5


@dataclass(frozen=True, slots=True)
class SyntheticClicks:
    features: list[list[str]]
    p: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]

    @property
    def base_rate(self) -> float:
        return float(self.y.mean())

    def true_log_loss(self) -> float:
        """The log loss of the true probabilities: the floor any model can reach."""
        p = np.clip(self.p, 1e-15, 1 - 1e-15)
        return float(-np.mean(self.y * np.log(p) + (1 - self.y) * np.log1p(-p)))


def _zipf(n: int, s: float) -> npt.NDArray[np.float64]:
    w = 1.0 / np.arange(1, n + 1) ** s
    out: npt.NDArray[np.float64] = w / w.sum()
    return out


class ClickWorld:
    """The fixed truth (effects) of one synthetic market; ``draw`` samples impressions."""

    def __init__(self, rng: np.random.Generator, base_rate: float = 0.01) -> None:
        self.effects = {f: rng.normal(0.0, sd, n) for f, (n, sd, _) in FIELDS.items()}
        self.probs = {f: _zipf(n, s) for f, (n, _, s) in FIELDS.items()}
        ncamp, napp, ncountry = FIELDS["campaign"][0], FIELDS["app"][0], FIELDS["country"][0]
        self.creative = rng.normal(0.0, 0.3, (ncamp, CREATIVES_PER_CAMPAIGN))
        self.campaign_app = rng.normal(0.0, INTERACTION_SD, (ncamp, napp))
        self.campaign_country = rng.normal(0.0, INTERACTION_SD, (ncamp, ncountry))
        self.intercept = 0.0
        # the intercept that gives the wanted base rate on a large sample
        probe = self._draw(rng, 50_000)
        z = self._logit(probe)
        lo, hi = -15.0, 5.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if float(np.mean(1.0 / (1.0 + np.exp(-(z + mid))))) < base_rate:
                lo = mid
            else:
                hi = mid
        self.intercept = 0.5 * (lo + hi)
        self._names = {
            f: [f"{f}={v}" for v in range(n)] for f, (n, _, _) in FIELDS.items() if f != "campaign"
        }
        self._campaign = [f"campaign={c}" for c in range(ncamp)]
        self._creative = [
            [f"creative={c * CREATIVES_PER_CAMPAIGN + k}" for k in range(CREATIVES_PER_CAMPAIGN)]
            for c in range(ncamp)
        ]
        self._crosses: dict[tuple[str, int, int], str] = {}

    def _draw(self, rng: np.random.Generator, n: int) -> dict[str, npt.NDArray[np.int64]]:
        v = {f: rng.choice(len(p), size=n, p=p) for f, p in self.probs.items()}
        v["creative"] = rng.integers(0, CREATIVES_PER_CAMPAIGN, size=n)
        return v

    def _logit(self, v: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float64]:
        z = np.full(v["os"].shape[0], self.intercept)
        for f, eff in self.effects.items():
            z += eff[v[f]]
        c = v["campaign"]
        z += self.creative[c, v["creative"]]
        z += self.campaign_app[c, v["app"]]
        z += self.campaign_country[c, v["country"]]
        return z

    def _cross(self, name: str, a: int, b: int) -> str:
        key = (name, a, b)
        s = self._crosses.get(key)
        if s is None:
            s = self._crosses[key] = f"{name}={a}^{b}"
        return s

    def draw(self, rng: np.random.Generator, n: int) -> SyntheticClicks:
        v = self._draw(rng, n)
        p = 1.0 / (1.0 + np.exp(-self._logit(v)))
        y = (rng.random(n) < p).astype(np.float64)
        names = self._names
        cols = {f: v[f].tolist() for f in v}
        rows = []
        for i in range(n):
            c, app, country = cols["campaign"][i], cols["app"][i], cols["country"][i]
            rows.append(
                [
                    names["country"][country],
                    names["os"][cols["os"][i]],
                    names["dt"][cols["dt"][i]],
                    names["app"][app],
                    names["pub"][cols["pub"][i]],
                    names["hour"][cols["hour"][i]],
                    self._campaign[c],
                    self._creative[c][cols["creative"][i]],
                    self._cross("campaign^app", c, app),
                    self._cross("campaign^country", c, country),
                ]
            )
        return SyntheticClicks(rows, p, y)


def constant_log_loss(y: npt.NDArray[np.float64]) -> float:
    r = min(max(float(y.mean()), 1e-15), 1 - 1e-15)
    return -(r * math.log(r) + (1 - r) * math.log(1 - r))


def event_stream(
    world: ClickWorld,
    rng: np.random.Generator,
    auctions: int,
    *,
    start_ts: float = 0.0,
    interval_s: float = 0.05,
    market_mu: float = math.log(1_500_000),
    market_sigma: float = 0.5,
    p_install: float = 0.1,
    first_price_share: float = 0.3,
    loss_price_share: float = 0.2,
) -> list[AnyEvent]:
    """The events a learner would hear of ``auctions`` bids, in time order: each bid is won
    or lost against a log-normal competing price; a win is an impression; clicks follow the
    world's true probability (delay ~ 30 s), installs a fixed share of clicks (~ 10 min)."""
    clicks = world.draw(rng, auctions)
    competing = np.exp(rng.normal(market_mu, market_sigma, auctions)).astype(np.int64)
    bids = np.exp(rng.normal(market_mu + 0.3, 0.4, auctions)).astype(np.int64)
    first = rng.random(auctions) < first_price_share
    events: list[AnyEvent] = []
    for i in range(auctions):
        ts = start_ts + i * interval_s
        txid = f"r{i}:1:b0"
        at = 1 if first[i] else 2
        b, m = int(bids[i]), int(competing[i])
        features = [*clicks.features[i], "exchange=ex", "country=US", "fmt=banner", "size=320x50"]
        events.append(
            BidEvent(
                txid=txid,
                ts=ts,
                imp_id="1",
                campaign_id=1,
                creative_id=1,
                bid_cpm_micros=b,
                floor_cpm_micros=0,
                value_cpm_micros=2 * b,
                p_click=0.0,
                p_install=0.0,
                auction_type=at,
                features=features,
            )
        )
        if b <= m:
            sent = rng.random() < loss_price_share
            events.append(
                LossEvent(
                    txid=txid,
                    ts=ts + 0.5,
                    campaign_id=1,
                    creative_id=1,
                    bid_cpm_micros=b,
                    clear_cpm_micros=m if sent else 0,
                )
            )
            continue
        events.append(
            WinEvent(
                txid=txid,
                ts=ts + 0.5,
                campaign_id=1,
                creative_id=1,
                bid_cpm_micros=b,
                clear_cpm_micros=b if at == 1 else m,
            )
        )
        events.append(ImpressionEvent(txid=txid, ts=ts + 1.0, campaign_id=1, creative_id=1))
        if clicks.y[i] > 0:
            click_ts = ts + 1.0 + float(rng.exponential(30.0))
            events.append(ClickEvent(txid=txid, ts=click_ts, campaign_id=1, creative_id=1))
            if rng.random() < p_install:
                events.append(
                    InstallEvent(
                        txid=txid,
                        ts=click_ts + float(rng.exponential(600.0)),
                        campaign_id=1,
                        creative_id=1,
                    )
                )
    events.sort(key=lambda e: e.ts)
    return events
