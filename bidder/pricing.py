"""Pricing: floors in the bidding currency, second-price margins, first-price bid shading
against a learnt market price distribution. Every price is integer micros CPM.

First price: with the highest competing bid ``M`` distributed log-normally, P(win | b) =
Phi((ln b - mu) / sigma), and the bid maximises (value - b) * P(win | b). In t = ln b that
objective is log-concave, so the optimum is the single root of

    h(t) = lambda(z) / sigma - e^t / (value - e^t),   z = (t - mu) / sigma,
    lambda(z) = phi(z) / Phi(z)  (decreasing),

found by safeguarded Newton steps inside [ln floor, ln value). The optimum rises with the value
and stays below it; a floor above it is met when that still leaves a profit.

Second price: value x (1 - margin), and no bid when that is under the floor (raising a bid to
the floor would spend the margin). A deal with ``at=3`` is fixed price: the bid is its floor.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple, Protocol

_SQRT2: Final = math.sqrt(2.0)
_erfc: Final = math.erfc
_log: Final = math.log
_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_SQRT_2PI: Final = 0.5 * math.log(2.0 * math.pi)
MIN_SIGMA: Final = 0.05
MAX_FLOOR: Final = 1e12  # currency units CPM


def convert_micros(
    micros: int, from_cur: str, to_cur: str, fx: dict[str, int], *, round_up: bool
) -> int | None:
    """``micros`` of ``from_cur`` in ``to_cur`` (fx: units per USD x 1e6); None if unknown."""
    if from_cur == to_cur:
        return micros
    src, dst = fx.get(from_cur), fx.get(to_cur)
    if not src or not dst:
        return None
    if round_up:
        return -((-micros * dst) // src)
    return micros * dst // src


def floor_micros(bidfloor: float, cur: str, to_cur: str, fx: dict[str, int]) -> int | None:
    """A floor (float CPM in ``cur``) as micros CPM in ``to_cur``, rounded up: a bid at the
    converted floor is never under it. None when the currency is unknown. Floors past
    ``MAX_FLOOR`` (far above any bid) count as ``MAX_FLOOR``, so that huge ones stay integers."""
    micros = math.ceil(min(bidfloor, MAX_FLOOR) * 1_000_000 - 1e-6) if bidfloor > 0 else 0
    return convert_micros(micros, (cur or "USD").strip().upper(), to_cur, fx, round_up=True)


class MarketPriceModel(Protocol):
    def p_win(self, segment: str, bid_micros: int) -> float: ...

    def observe_win(self, segment: str, price_micros: int, exact: bool = True) -> None:
        """A win: ``exact`` when ``price`` is the competing price (second price clearing
        price); otherwise the competing price was below it (our first-price bid)."""
        ...

    def observe_loss(self, segment: str, bid_micros: int) -> None:
        """A loss at ``bid``: the competing price was above it."""
        ...


def _phi(z: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _mills(z: float) -> float:
    """lambda(z) = phi(z) / Phi(z), stable for very negative z."""
    if z < -25.0:
        z2 = z * z
        return -z / (1.0 - 1.0 / z2 + 3.0 / (z2 * z2))
    return _phi(z) / _cdf(z)


def _log_mills(z: float) -> float:
    """ln lambda(z), finite where phi(z) underflows (large z)."""
    if z < -25.0:
        return math.log(_mills(z))
    return -0.5 * z * z - _LOG_SQRT_2PI - math.log(_cdf(z))


class LogNormalMarket:
    """Per-segment log-normal of the competing price, learnt online from win and loss notices.

    Each observation updates exponentially weighted moments of ln(price); a censored one
    (loss: price above our bid; first-price win: below it) contributes the moments of the
    current estimate truncated at the bid, a single EM step. Segments with few observations
    are shrunk towards the global estimate. At most ``max_segments`` are kept (then cleared).
    """

    def __init__(
        self,
        prior_median_micros: int = 1_000_000,
        prior_sigma: float = 1.0,
        prior_weight: float = 20.0,
        min_alpha: float = 0.01,
        shrink: float = 20.0,
        max_segments: int = 20_000,
    ) -> None:
        mu = math.log(max(prior_median_micros, 1))
        var = max(prior_sigma, MIN_SIGMA) ** 2
        self._global = [prior_weight, mu, var + mu * mu]  # [count, E x, E x^2]
        self._segments: dict[str, list[float]] = {}
        self._min_alpha = min_alpha
        self._shrink = shrink
        self._max = max_segments

    def params(self, segment: str) -> tuple[float, float]:
        """(mu, sigma) of ln(competing price) for the segment."""
        g_mu, g_var = self._moments(self._global)
        s = self._segments.get(segment)
        if s is None:
            return g_mu, math.sqrt(g_var)
        s_mu, s_var = self._moments(s)
        w = s[0] / (s[0] + self._shrink)
        mu = w * s_mu + (1 - w) * g_mu
        var = w * s_var + (1 - w) * g_var
        return mu, math.sqrt(max(var, MIN_SIGMA**2))

    @staticmethod
    def _moments(state: list[float]) -> tuple[float, float]:
        mu = state[1]
        return mu, max(state[2] - mu * mu, MIN_SIGMA**2)

    def p_win(self, segment: str, bid_micros: int) -> float:
        if bid_micros <= 0:
            return 0.0
        mu, sigma = self.params(segment)
        return _cdf((math.log(bid_micros) - mu) / sigma)

    def observe_win(self, segment: str, price_micros: int, exact: bool = True) -> None:
        if price_micros <= 0:
            return
        x = math.log(price_micros)
        if exact:
            self._update(segment, x, x * x)
        else:
            self._censored(segment, x, above=False)

    def observe_loss(self, segment: str, bid_micros: int) -> None:
        if bid_micros <= 0:
            return
        self._censored(segment, math.log(bid_micros), above=True)

    def _censored(self, segment: str, c: float, *, above: bool) -> None:
        mu, sigma = self.params(segment)
        a = (c - mu) / sigma
        if above:  # x > c
            lam = _mills(-a)
            mean = mu + sigma * lam
            var = sigma * sigma * max(1.0 + a * lam - lam * lam, 1e-6)
        else:  # x < c
            lam = _mills(a)
            mean = mu - sigma * lam
            var = sigma * sigma * max(1.0 - a * lam - lam * lam, 1e-6)
        self._update(segment, mean, var + mean * mean)

    def _update(self, segment: str, m1: float, m2: float) -> None:
        s = self._segments.get(segment)
        if s is None:
            if len(self._segments) >= self._max:
                self._segments.clear()
            g_mu, g_var = self._moments(self._global)
            s = self._segments[segment] = [0.0, g_mu, g_var + g_mu * g_mu]
        for state in (s, self._global):
            alpha = max(1.0 / (state[0] + 1.0), self._min_alpha)
            state[0] += 1.0
            state[1] += alpha * (m1 - state[1])
            state[2] += alpha * (m2 - state[2])


def optimal_tau(x: float, sigma: float) -> float:
    """The first-price optimum in normalised units: with x = (ln value - mu) / sigma, the
    bid is exp(mu + sigma * tau) where tau < x is the root of

        G(tau) = ln lambda(tau) + ln(expm1(sigma * (x - tau))) - ln sigma   (decreasing).
    """
    log_sigma = math.log(sigma)

    def g(tau: float) -> tuple[float, float]:
        log_lam = _log_mills(tau)
        a = sigma * (x - tau)  # > 0
        log_e = a + math.log1p(-math.exp(-a)) if a > 30.0 else math.log(math.expm1(a))
        return (
            log_lam + log_e - log_sigma,
            -(tau + math.exp(log_lam)) - sigma / -math.expm1(-a),
        )

    hi = x
    d = 1.0
    lo = x - d
    while g(lo)[0] <= 0.0:  # widen downwards until the root is bracketed
        d *= 2.0
        lo = x - d
    tau = lo
    for _ in range(200):
        value, slope = g(tau)
        if value > 0.0:
            lo = tau
        else:
            hi = tau
        nxt = tau - value / slope if slope < 0.0 else 0.5 * (lo + hi)
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - tau) <= 1e-12 * max(1.0, abs(tau)):
            return nxt
        tau = nxt
    return tau


def shade(value: int, floor: int, mu: float, sigma: float) -> int | None:
    """The exact first-price bid maximising (value - b) * Phi((ln b - mu) / sigma) over
    b >= floor; None when no bid at or above the floor leaves a profit."""
    lo = max(floor, 1)
    if value <= lo:
        return None
    sigma = max(sigma, MIN_SIGMA)
    tau = optimal_tau((math.log(value) - mu) / sigma, sigma)
    return min(max(int(math.exp(mu + sigma * tau)), lo), value - 1)


class ShadingTable:
    """tau*(x) for one sigma, memoised at exact grid points (x step 1/16) and interpolated
    linearly between them: increasing in x and below it, so bids still rise with the value
    and stay under it; the loss against the exact optimum is second order (the objective is
    flat there)."""

    __slots__ = ("_max", "_points", "sigma")

    STEP: Final = 1.0 / 16.0

    def __init__(self, sigma: float, max_points: int = 20_000) -> None:
        self.sigma = sigma
        self._points: dict[int, float] = {}
        self._max = max_points

    def _point(self, k: int) -> float:
        tau = self._points.get(k)
        if tau is None:
            tau = optimal_tau(k * self.STEP, self.sigma)
            if len(self._points) >= self._max:
                self._points.clear()
            self._points[k] = tau
        return tau

    def tau(self, x: float) -> float:
        u = x * 16.0
        k = math.floor(u)
        points = self._points
        t0 = points.get(k)
        if t0 is None:
            t0 = self._point(k)
        t1 = points.get(k + 1)
        if t1 is None:
            t1 = self._point(k + 1)
        return t0 + (u - k) * (t1 - t0)

    def bid(self, value: int, floor: int, mu: float) -> int | None:
        lo = floor if floor > 1 else 1
        if value <= lo:
            return None
        sigma = self.sigma
        x = (math.log(value) - mu) / sigma
        if not -1e4 < x < 1e4:
            return None
        bid = int(math.exp(mu + sigma * self.tau(x)))
        return min(max(bid, lo), value - 1)


class Shader:
    """Shading tables by sigma rounded to 0.01 (sigma is learnt, so it drifts slowly)."""

    def __init__(self, max_tables: int = 500) -> None:
        self._tables: dict[int, ShadingTable] = {}
        self._max = max_tables
        self._last: tuple[float, ShadingTable] | None = None  # the last sigma and its table

    @staticmethod
    def quantize(sigma: float) -> float:
        return round(max(sigma, MIN_SIGMA), 2)

    def table(self, sigma: float) -> ShadingTable:
        key = round(self.quantize(sigma) * 100)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= self._max:
                self._tables.clear()
            table = self._tables[key] = ShadingTable(key / 100.0)
        return table

    def bid(self, value: int, floor: int, mu: float, sigma: float) -> int | None:
        last = self._last
        if last is not None and last[0] == sigma:  # a request's candidates share a segment
            return last[1].bid(value, floor, mu)
        table = self.table(sigma)
        self._last = (sigma, table)
        return table.bid(value, floor, mu)


def shade_grid(
    value: int, floor: int, market: MarketPriceModel, segment: str, n: int = 32
) -> int | None:
    """``shade`` for a market model known only through ``p_win``: the best of ``n`` bids
    spread over [floor, value)."""
    lo = max(floor, 1)
    if value <= lo:
        return None
    best, best_gain = None, -1.0
    for k in range(n):
        b = lo + (value - lo) * k // n
        gain = (value - b) * market.p_win(segment, b)
        if gain > best_gain:
            best, best_gain = b, gain
    return best


class Priced(NamedTuple):
    """A bid (a NamedTuple: built once per priced candidate, cheaper than a dataclass)."""

    price: int  # micros CPM, bidding currency
    p_win: float


def price(
    value: int,
    floor: int,
    max_bid: int,
    auction_type: int,
    margin: float,
    min_bid: int,
    market: MarketPriceModel,
    segment: str,
    params: tuple[float, float] | None = None,
    shader: Shader | None = None,
) -> Priced | str:
    """The bid for one candidate, or the reason there is none ("floor", "low_value").

    ``params`` are the segment's (mu, sigma) when the market model has them (see
    ``market_params``); with a ``shader`` first-price bids are interpolated, else exact."""
    if max_bid < floor:
        return "floor"
    if value <= 0:
        return "low_value"
    bid: int | None
    if auction_type == 3:  # fixed price (deals)
        bid = floor if value > floor else None
    elif auction_type == 1:
        if params is None:
            bid = shade_grid(value, floor, market, segment)
        elif shader is not None:
            bid = shader.bid(value, floor, *params)
        else:
            bid = shade(value, floor, *params)
    else:
        bid = int(value * (1.0 - margin))
    if bid is None:
        return "floor"
    if max_bid < bid:  # min(bid, max_bid), inlined like the rest of this hot function
        bid = max_bid
    if bid < floor:
        return "floor"
    if bid < min_bid or bid <= 0:
        return "low_value"
    if params is not None:
        mu, sigma = params
        if sigma < MIN_SIGMA:  # max(sigma, MIN_SIGMA), NaN kept
            sigma = MIN_SIGMA
        return Priced(bid, 0.5 * _erfc(-((_log(bid) - mu) / sigma) / _SQRT2))  # _cdf
    return Priced(bid, market.p_win(segment, bid))


def market_params(market: MarketPriceModel, segment: str) -> tuple[float, float] | None:
    """(mu, sigma) of the segment when the model is log-normal (has ``params``), else None."""
    params = getattr(market, "params", None)
    if params is None:
        return None
    mu, sigma = params(segment)
    return float(mu), float(sigma)
