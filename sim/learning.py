"""What learning did over the run, against the simulator's truth: the live model in the last
quarter of the simulated day (where a learner has had most of the day to learn), and the win
rate per simulated hour (which falls towards the target as the learnt market model shades
first-price bids).

The aim of the model line: in the last quarter, the model's excess log loss over the truth is at
most half of a constant predictor's (the constant is the mean true p(click) of the same
impressions: the best constant there is, not a strawman). Every bid is scored, won or not, by the
p(click) its BidEvent carries (the model version that priced it) against the truth of that
bid's campaign and creative, an expected log loss with no click-sampling noise. The learning
curve gives the same share per simulated hour. Reads only the report's inputs (bid events seen
on the bus, the exchange's rows).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sim import bounds, calibration
from sim import vocabulary as vocab
from sim.calibration import Prediction
from sim.ledger import WON, AuctionTable
from sim.market import Market, MarketParams
from sim.population import LATENT_SD, SEGMENT_NOISE_SD, SEGMENT_THRESHOLD

AIM: Final = 0.5  # excess over the truth, as a share of the constant's, in the last quarter
HOUR: Final = 3600.0


def fleet_defaults(environ: MutableMapping[str, str]) -> None:
    """Learner settings for a demo, unless set: a simulated day passes in minutes, so models are
    exported every few seconds and the click window is an hour of simulated time."""
    environ.setdefault("RTBFLEET_LEARNER_EXPORT_INTERVAL_S", "5")
    environ.setdefault("RTBFLEET_LEARNER_FLUSH_INTERVAL_S", "0.5")
    environ.setdefault("RTBFLEET_LEARNER_CLICK_WINDOW_S", "3600")
    environ.setdefault("RTBFLEET_LEARNER_BID_TTL_S", "3600")
    # a run has some 30 000 impressions: blocks of 500 let the grid judge its estimators
    # (at least 10 blocks) within the first hours rather than never
    environ.setdefault("RTBFLEET_LEARNER_BLOCK_EXAMPLES", "500")


@dataclasses.dataclass(frozen=True, slots=True)
class Joined:
    """The predictions that joined a bid row, as arrays in the order they arrived."""

    rows: npt.NDArray[np.int64]
    p_click: npt.NDArray[np.float64]
    p_win: npt.NDArray[np.float64]
    version: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]  # bidding currency (as the bid)
    bid: npt.NDArray[np.float64]

    @classmethod
    def of(
        cls,
        predictions: Iterable[Prediction],
        request_index: Mapping[str, int],
        table: AuctionTable,
    ) -> Joined:
        rows: list[int] = []
        q: list[float] = []
        w: list[float] = []
        v: list[int] = []
        value: list[float] = []
        bid: list[float] = []
        for pred in predictions:
            row = calibration.row_of(pred, request_index, table)
            if row is None:
                continue
            rows.append(row)
            q.append(pred.p_click)
            w.append(pred.p_win)
            v.append(pred.model_version)
            value.append(pred.value_cpm_micros)
            bid.append(pred.bid_cpm_micros)
        return cls(
            np.asarray(rows, dtype=np.int64),
            np.asarray(q, dtype=np.float64),
            np.asarray(w, dtype=np.float64),
            np.asarray(v, dtype=np.int64),
            np.asarray(value, dtype=np.float64),
            np.asarray(bid, dtype=np.float64),
        )


def _excess(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(the model's excess log loss over the truth, the best constant's): the constant is the
    mean truth of the same impressions, the best any constant can do on them."""
    entropy = calibration.cross_entropy(p, p)
    excess = calibration.cross_entropy(p, q) - entropy
    constant = calibration.cross_entropy(p, np.full_like(p, float(p.mean()))) - entropy
    return excess, constant


def _per_bid(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each bid's cross-entropy of ``q`` against the truth ``p``, less the truth's entropy."""
    eps = calibration.EPS
    qc = np.clip(q, eps, 1 - eps)
    pc = np.clip(p, eps, 1 - eps)
    out: npt.NDArray[np.float64] = p * np.log(pc / qc) + (1 - p) * np.log((1 - pc) / (1 - qc))
    return out


def share_interval(
    p: npt.NDArray[np.float64],
    q: npt.NDArray[np.float64],
    rng: np.random.Generator,
    resamples: int = 300,
) -> tuple[float, float]:
    """A 95 % bootstrap interval of excess / constant excess over these bids (the bids are
    resampled; the constant stays the mean truth of all of them): how precisely this many bids
    measure the share, not how much another run would differ."""
    model = _per_bid(p, q)
    const = _per_bid(p, np.full_like(p, float(p.mean())))
    idx = rng.integers(0, len(p), size=(resamples, len(p)))
    ratios = model[idx].mean(axis=1) / np.maximum(const[idx].mean(axis=1), 1e-300)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def last_quarter(
    predictions: Iterable[Prediction] | Joined,
    request_index: Mapping[str, int],
    table: AuctionTable,
    sim_seconds: float,
    market: Market | None = None,
) -> dict[str, Any] | str:
    """The model against the truth on the impressions of the last quarter of simulated time;
    with the run's ``market``, the oracle bounds on the same bids too (``oracle_bounds``)."""
    j = (
        predictions
        if isinstance(predictions, Joined)
        else Joined.of(predictions, request_index, table)
    )
    start = 0.75 * sim_seconds
    keep = table["t_sim"][j.rows] >= start if len(j.rows) else np.zeros(0, dtype=bool)
    if not keep.any():
        return "not measured: no bid event of the last quarter matched a bid we saw"
    p = table["p_click"][j.rows[keep]].astype(np.float64)
    excess, constant = _excess(p, j.p_click[keep])
    share = excess / constant if constant > 0 else None
    interval = share_interval(p, j.p_click[keep], np.random.default_rng(0)) if share else None
    first = int(j.version[int(np.argmin(table["t_sim"][j.rows]))])
    return {
        "from_sim_s": start,
        "joined": int(keep.sum()),
        "excess_log_loss": excess,
        "constant_excess": constant,
        "excess_share_of_constant": share,
        "share_interval": interval,
        "aim_met": share is not None and share <= AIM,
        "learnt_models": sorted({int(v) for v in j.version[keep] if v > 0}),
        # > 0: the run's first bid was scored by a model stored before it (an earlier run on
        # the same data directory), so its learning did not start from the priors
        "first_model": first,
        "bounds": None if market is None else oracle_bounds(table, j.rows[keep], market),
    }


def oracle_bounds(
    table: AuctionTable, rows: npt.NDArray[np.int64], market: Market
) -> dict[str, float] | None:
    """On these bid rows, the excess log loss as a share of the best constant's of two oracles
    that know every term of the true p(click) but the user's latent interests (``sim.bounds``):
    ``without_user`` averages them over the population; ``with_segments`` takes their posterior
    mean given the user's segments where privacy lets the bidder use them (else the average).
    What any model of the request can reach: it cannot beat the second on average."""
    if not len(rows) or "user" not in table.columns:
        return None
    return oracle_shares(
        table["p_click"][rows].astype(np.float64),
        table["user"][rows],
        table["personal"][rows].astype(bool),
        table["campaign_id"][rows],
        market,
    )


def oracle_shares(
    p: npt.NDArray[np.float64],
    users: npt.NDArray[np.int64],
    personal: npt.NDArray[np.bool_],
    campaigns: npt.NDArray[np.int64],
    market: Market,
) -> dict[str, float]:
    """``oracle_bounds`` on arrays: each impression's true p(click), its user (an index into
    ``market.users``), whether its segments may be used, and its campaign."""
    index = {s: i for i, s in enumerate(vocab.USER_SEGMENTS)}
    latent = np.array([market.users[int(u)].latent for u in users], dtype=np.float64)
    c = np.array([market.campaign_latent(int(k)) for k in campaigns], dtype=np.float64)
    live = (p > 0) & (p < 1)  # a crawler's p is 0: known, no interests to average
    logit = np.log(np.where(live, p, 0.5) / np.where(live, 1 - p, 0.5))
    rest = logit - np.einsum("ij,ij->i", latent, c)
    blind = np.where(live, bounds.mean_without_user(rest, LATENT_SD * np.linalg.norm(c, axis=1)), p)
    posterior = bounds.LatentPosterior(
        market.segment_directions,
        latent_sd=LATENT_SD,
        noise_sd=SEGMENT_NOISE_SD,
        threshold=SEGMENT_THRESHOLD,
        rng=np.random.default_rng([market.seed, 9]),
    )
    informed = blind.copy()
    for i in np.flatnonzero(live & personal).tolist():
        member = [index[s] for s in market.users[int(users[i])].segments]
        informed[i] = posterior.mean_click(member, float(rest[i]), c[i])
    out = {}
    for name, q in (("without_user", blind), ("with_segments", informed)):
        excess, constant = _excess(p, q)
        out[name] = excess / constant if constant > 0 else math.nan
    out["personal_share"] = float(personal.mean())
    return out


def curve(j: Joined, table: AuctionTable, sim_seconds: float) -> list[dict[str, Any]]:
    """The learning curve: per simulated hour, the model's excess log loss over the truth as a
    share of the best constant's on the same impressions, and the newest model scoring them."""
    hours = _hours(sim_seconds)
    if not len(j.rows):
        return [{"hour": h, "joined": 0} for h in range(hours)]
    which = np.clip((table["t_sim"][j.rows] // HOUR).astype(np.int64), 0, hours - 1)
    out: list[dict[str, Any]] = []
    for h in range(hours):
        m = which == h
        entry: dict[str, Any] = {"hour": h, "joined": int(m.sum())}
        if m.any():
            excess, constant = _excess(table["p_click"][j.rows[m]].astype(np.float64), j.p_click[m])
            entry["excess_share_of_constant"] = excess / constant if constant > 0 else None
            entry["model"] = int(j.version[m].max())
        out.append(entry)
    return out


def _hours(sim_seconds: float) -> int:
    """Simulated hours of a run; a run that overshoots its last hour by under a minute (the
    traffic's last requests) does not open another (those bids count in the last hour)."""
    return max(1, int(np.ceil(max(sim_seconds, 1.0) / HOUR - 1 / 60)))


def true_p_win(
    bid: npt.NDArray[np.float64],
    floor: npt.NDArray[np.float64],
    median: npt.NDArray[np.float64],
    shape: MarketParams,
) -> npt.NDArray[np.float64]:
    """P(win | bid) in the simulator's open auction: at or above the floor, and above the best
    competing bid (none with ``no_competition_share``, else log-normal around ``median``)."""
    z = (np.log(np.maximum(bid, 1.0)) - np.log(np.maximum(median, 1.0))) / shape.price_sigma
    above = 0.5 * np.vectorize(math.erfc)(-z / math.sqrt(2.0))
    q0 = shape.no_competition_share
    out: npt.NDArray[np.float64] = np.where(bid >= floor, q0 + (1.0 - q0) * above, 0.0)
    return out


def optimal_p_win(
    value: npt.NDArray[np.float64],
    floor: npt.NDArray[np.float64],
    median: npt.NDArray[np.float64],
    shape: MarketParams,
    points: int = 256,
) -> npt.NDArray[np.float64]:
    """P(win) of the first-price bid that maximises (value - bid) x P(win | bid) against the
    true market (the best of ``points`` bids spread over [floor, value)): the win rate a bidder
    that knew the market and its values would aim at."""
    lo = np.maximum(floor, 1.0)
    k = np.arange(points, dtype=np.float64) / points
    bids = lo[:, None] + (np.maximum(value - lo, 0.0))[:, None] * k[None, :]
    p = true_p_win(
        bids.ravel(),
        np.repeat(floor, points),
        np.repeat(median, points),
        shape,
    ).reshape(bids.shape)
    best = np.argmax((value[:, None] - bids) * p, axis=1)
    out: npt.NDArray[np.float64] = p[np.arange(len(value)), best]
    return out


def first_price_by_hour(
    j: Joined, table: AuctionTable, sim_seconds: float, shape: MarketParams | None = None
) -> list[Any]:
    """Per simulated hour, open-auction first-price bids only: [won share, the bidder's mean
    P(win), the true mean P(win) at its bids, the true mean P(win) at the optimal bids] (None
    for an hour without one). Shading maximises (value - bid) x P(win | bid) under the learnt
    market model; the optimum against the true market (``optimal_p_win``) is the target the
    win rate should approach as that model learns."""
    shape = shape or MarketParams()
    hours = _hours(sim_seconds)
    out: list[Any] = [None] * hours
    if not len(j.rows):
        return out
    median = table["market_median_usd_micros"][j.rows].astype(np.float64)
    bid_usd = table["bid_usd_micros"][j.rows].astype(np.float64)
    m = (
        (table["auction_type"][j.rows] == 1)
        & (j.p_win > 0)
        & (median > 0)
        & (j.bid > 0)
        & (bid_usd > 0)
        & (j.value > j.bid)
    )
    if not m.any():
        return out
    rows = j.rows[m]
    floor = table["floor_usd_micros"][rows].astype(np.float64)
    value_usd = j.value[m] * bid_usd[m] / j.bid[m]
    at_bid = true_p_win(bid_usd[m], floor, median[m], shape)
    target = optimal_p_win(value_usd, floor, median[m], shape)
    won = table["outcome"][rows] == WON
    which = np.clip((table["t_sim"][rows] // HOUR).astype(np.int64), 0, hours - 1)
    for h in range(hours):
        k = which == h
        if k.any():
            out[h] = [
                float(won[k].mean()),
                float(j.p_win[m][k].mean()),
                float(at_bid[k].mean()),
                float(target[k].mean()),
            ]
    return out


def win_rate_by_hour(table: AuctionTable, sim_seconds: float) -> list[float | None]:
    """Wins over bids per simulated hour (None for an hour without a bid)."""
    hours = _hours(sim_seconds)
    which = np.clip((table["t_sim"] // HOUR).astype(np.int64), 0, hours - 1)
    has_bid = table["bid_usd_micros"] > 0
    bids = np.bincount(which[has_bid], minlength=hours)
    wins = np.bincount(which[has_bid & (table["outcome"] == WON)], minlength=hours)
    return [float(w / b) if b else None for w, b in zip(wins.tolist(), bids.tolist(), strict=True)]


def figures(
    predictions: Iterable[Prediction],
    request_index: Mapping[str, int],
    table: AuctionTable,
    sim_seconds: float,
    market: Market | None = None,
) -> dict[str, Any]:
    """The report's ``learning`` figures (sim.report calls this once)."""
    j = Joined.of(predictions, request_index, table)
    return {
        "model_last_quarter": last_quarter(j, request_index, table, sim_seconds, market),
        "curve_by_hour": curve(j, table, sim_seconds),
        "win_rate_by_hour": win_rate_by_hour(table, sim_seconds),
        "first_price_by_hour": first_price_by_hour(j, table, sim_seconds),
    }


def summary_lines(learning: Mapping[str, Any]) -> list[str]:
    """The report's lines for these figures."""
    m = learning["model_last_quarter"]
    if isinstance(m, str):
        line = f"Learning  {m}"
    else:
        share = m["excess_share_of_constant"]
        verdict = "aim met" if m["aim_met"] else f"aim (<= {AIM:.0%} of the constant's) NOT met"
        line = (
            f"Learning  last quarter: excess log loss {m['excess_log_loss']:.5f} over the truth, "
            f"a constant's {m['constant_excess']:.5f}"
            + (
                f" ({share:.0%}{_interval(m.get('share_interval'))}; {verdict})"
                if share is not None
                else ""
            )
            + f"; learnt models used: {len(m['learnt_models'])}"
            + (
                f"; the run began with model {m['first_model']} of an earlier run"
                if m.get("first_model", 0) > 0
                else ""
            )
        )
    lines = [line]
    b = None if isinstance(m, str) else m.get("bounds")
    if b:
        lines.append(
            f"Learning  bounds on the same bids, oracles of everything but the user's interests: "
            f"{b['without_user']:.0%} knowing nothing of the user, {b['with_segments']:.0%} "
            f"knowing its segments where they may be used ({b['personal_share']:.0%} of the bids)"
        )
    hours = learning.get("curve_by_hour", [])
    if any("excess_share_of_constant" in h for h in hours):
        shares = " ".join(_pct(h.get("excess_share_of_constant")) for h in hours)
        lines.append(f"Learning  excess as a share of a constant's, per simulated hour: {shares}")
    rates = " ".join(_pct(r) for r in learning["win_rate_by_hour"])
    lines.append(f"Win rate  per simulated hour: {rates}")
    first = learning.get("first_price_by_hour", [])
    if any(f is not None for f in first):
        columns = (
            ("Win rate  first price, won", 0),
            ("          the bidder's P(win) at its bids", 1),
            ("          target: the optimum against the true market", 3),
        )
        for label, k in columns:
            row = " ".join("-" if f is None else f"{f[k]:.0%}" for f in first)
            lines.append(f"{label:<54}{row}")
    return lines


def _interval(interval: Any) -> str:
    return "" if not interval else f", 95 % interval {interval[0]:.0%}-{interval[1]:.0%}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x + 0.0:.0%}" if abs(x) >= 0.005 else "0%"


def oracle_share_without_user(
    market: Market, rng: random.Random, draws: int, campaigns: int = 20, latent_draws: int = 2000
) -> float:
    """What the aim asks of a model, against what the market allows: the excess log loss (as a
    share of the best constant's) of an oracle that knows every term of the true p(click)
    exactly except the user's latent interests, which it averages out (their interaction with
    the campaign's is the largest term of the truth; a bid event carries of it only the user's
    segments, which the bidder does not cross with the campaign). Opportunities of the market,
    campaigns 1..``campaigns`` with three creatives each, at random hours of a day."""
    from sim.population import LATENT_DIM

    latent = np.random.default_rng(rng.getrandbits(32)).normal(
        0.0, LATENT_SD, (latent_draws, LATENT_DIM)
    )
    truth: list[float] = []
    oracle: list[float] = []
    for _ in range(draws):
        opp = market.draw(rng, 1.7e9 + rng.random() * 86_400.0)
        if opp.user.crawler:
            continue
        c = rng.randrange(1, campaigns + 1)
        p = market.p_click(opp, opp.slots[0], c, c * 10 + rng.randrange(3))
        interests = np.asarray(market.campaign_latent(c))
        rest = math.log(p / (1.0 - p)) - float(np.dot(opp.user.latent, interests))
        truth.append(p)
        oracle.append(float(np.mean(1.0 / (1.0 + np.exp(-(rest + latent @ interests))))))
    p_arr, q_arr = np.asarray(truth), np.asarray(oracle)
    excess, constant = _excess(p_arr, q_arr)
    return excess / constant
