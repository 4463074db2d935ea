"""A synthetic market with known truth: who asks for ads, what they are worth and who clicks.

Everything comes from a seed: the population (``sim.population``) from a numpy Generator at
construction, each draw from a ``random.Random`` passed in. Given the same seed and the same
simulated times, the same opportunities come out.

The truth the fleet is measured against:
- ``p_click``: a logistic model of the user's latent interests against the campaign's (an
  interaction), the placement, format, device, OS, connection, local hour and creative; base
  rate around 1 %.
- ``p_install_given_click``: logistic too, a few percent, with its own user × campaign term.
- ``competing price``: the best other bid, log-normal around a median by country × format ×
  size × device × placement quality × user value; sometimes nobody else bids.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from itertools import accumulate

import numpy as np

from sim import tcf
from sim import vocabulary as vocab
from sim.population import (
    EU_COUNTRIES,
    FORMAT_PRICE_USD,
    LATENT_DIM,
    SELLERS,
    UTC_OFFSET_HOURS,
    Deal,
    Placement,
    Publisher,
    Seller,
    User,
    make_publishers,
    make_users,
)

COUNTRY_PRICE_TIER = {
    "USA": 1.0,
    "CAN": 0.8,
    "GBR": 0.85,
    "DEU": 0.8,
    "FRA": 0.65,
    "JPN": 0.7,
    "ESP": 0.45,
    "ITA": 0.45,
    "BRA": 0.22,
    "MEX": 0.22,
    "IND": 0.1,
}
SIZE_PRICE = {"320x50": 0.5, "728x90": 0.8, "160x600": 0.7, "300x600": 1.2}
DEVICE_PRICE = {2: 0.9, 3: 2.5, 4: 1.0, 5: 1.1}
FORMAT_CTR = {"banner": 0.0, "video": 0.35, "native": 0.3}
SIZE_CTR = {"320x50": -0.5, "728x90": -0.3, "160x600": -0.2}
DEVICE_CTR = {2: -0.2, 3: -0.8, 4: 0.0, 5: 0.1}
CONNECTION_TYPES = tuple(vocab.CONNECTION_TYPES)
CONNECTION_CUM = tuple(accumulate(vocab.CONNECTION_TYPES.values()))


@dataclasses.dataclass(frozen=True)
class MarketParams:
    """The shape of the market; the defaults give ~1 % CTR and a few percent click→install."""

    users: int = 20_000
    placements: int = 240
    ctr_base_logit: float = -5.6
    install_base_logit: float = -3.4
    daily_cycle: float = 0.4  # traffic swings ±40 % over the day (peak at 21:00 local)
    crawler_share: float = 0.004  # of users (crawlers are busy: more of the traffic)
    multi_imp_share: float = 0.05
    no_competition_share: float = 0.08
    price_sigma: float = 0.6
    app_share_mobile: float = 0.75
    random_coppa_share: float = 0.004
    missing_consent_share: float = 0.05  # EU requests with gdpr=1 and no consent string
    vendor_id: int = 755  # the DSP's TCF vendor id, granted by consenting users


@dataclasses.dataclass(frozen=True, slots=True)
class Slot:
    """One impression opportunity inside a request, with its truth."""

    imp_id: str
    placement: Placement
    floor: int  # CPM micros in ``floor_currency`` (0: no floor)
    floor_currency: str
    deals: tuple[Deal, ...]
    competing_usd_micros: int  # the best other open-auction bid (0: nobody else bid)
    median_usd_micros: int = 0  # the median the competing bid was drawn around (the truth)


@dataclasses.dataclass(frozen=True, slots=True)
class Opportunity:
    sim_ts: float  # simulated seconds since the epoch
    local_hour: int  # hour of the week in the user's time zone, 0 = Monday 00:00
    seller: Seller
    publisher: Publisher
    user: User
    connection_type: int
    slots: tuple[Slot, ...]
    tmax_ms: int  # 0 = absent from the request
    auction_type: int
    gdpr: bool
    consent: str  # TC string ("" = none sent)
    consent_ok: bool  # the truth: purposes 1-4 and our vendor are granted
    coppa: bool
    us_privacy: str


@dataclasses.dataclass(frozen=True, slots=True)
class _CampaignTruth:
    latent: tuple[float, ...]
    ctr_bias: float
    install_latent: tuple[float, ...]
    install_bias: float
    category_affinity: dict[str, float]


def hour_of_week(sim_ts: float, offset_hours: int = 0) -> int:
    """0 = Monday 00:00 (the epoch began on a Thursday, hour 72 of its week)."""
    return (int(sim_ts // 3600) + 72 + offset_hours) % 168


def logistic(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _dot(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


class Market:
    """The population plus the rules that turn a moment and an RNG into an opportunity."""

    def __init__(self, params: MarketParams, seed: int) -> None:
        self.params = params
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        self._segment_directions = rng.normal(0.0, 1.0, size=(len(vocab.USER_SEGMENTS), LATENT_DIM))
        self.users = make_users(rng, params.users, self._segment_directions, params.crawler_share)
        self.publishers = make_publishers(rng, params.placements)
        self._apps = [p for p in self.publishers if p.kind == "app"]
        self._sites = [p for p in self.publishers if p.kind == "site"]
        self._app_cum = list(accumulate(p.popularity for p in self._apps))
        self._site_cum = list(accumulate(p.popularity for p in self._sites))
        self._video_apps = [
            (p, pl) for p in self._apps for pl in p.placements if pl.format == "video"
        ]
        activity = rng.lognormal(0.0, 1.0, size=len(self.users))
        self._by_country: dict[str, tuple[list[User], list[float]]] = {}
        for country in vocab.COUNTRIES:
            members = [u for u in self.users if u.country == country]
            weights = [float(activity[u.index]) * (3.0 if u.crawler else 1.0) for u in members]
            self._by_country[country] = (members, list(accumulate(weights)))
        self._countries = [c for c in vocab.COUNTRIES if self._by_country[c][0]]
        self._country_cum_by_hour = [self._country_cum(h) for h in range(24)]
        self._seller_cum = list(accumulate(s.share for s in SELLERS))
        self._campaigns: dict[int, _CampaignTruth] = {}
        self._creatives: dict[int, float] = {}
        self._consents: dict[int, str] = {}

    # -- traffic shape -------------------------------------------------------------------------

    def _cycle(self, local_hour_of_day: float) -> float:
        return 1.0 + self.params.daily_cycle * math.cos(2 * math.pi * (local_hour_of_day - 21) / 24)

    def _country_cum(self, utc_hour: int) -> list[float]:
        return list(
            accumulate(
                vocab.COUNTRIES[c] * self._cycle((utc_hour + UTC_OFFSET_HOURS[c]) % 24)
                for c in self._countries
            )
        )

    def intensity(self, sim_ts: float) -> float:
        """Traffic at ``sim_ts`` relative to the daily mean (the mean over a day is 1)."""
        hour = (sim_ts / 3600.0) % 24
        total = sum(vocab.COUNTRIES[c] for c in self._countries)
        return (
            sum(
                vocab.COUNTRIES[c] * self._cycle((hour + UTC_OFFSET_HOURS[c]) % 24)
                for c in self._countries
            )
            / total
        )

    # -- drawing an opportunity ----------------------------------------------------------------

    def draw(self, rng: random.Random, sim_ts: float) -> Opportunity:
        p = self.params
        cum = self._country_cum_by_hour[int(sim_ts // 3600) % 24]
        country = self._countries[bisect.bisect(cum, rng.random() * cum[-1])]
        members, user_cum = self._by_country[country]
        user = members[bisect.bisect(user_cum, rng.random() * user_cum[-1])]
        placements: list[Placement]
        if user.device_type == 3:
            publisher, placement = self._video_apps[rng.randrange(len(self._video_apps))]
            placements = [placement]
        else:
            app = not user.crawler and user.device_type != 2 and rng.random() < p.app_share_mobile
            pool, pool_cum = (self._apps, self._app_cum) if app else (self._sites, self._site_cum)
            publisher = pool[bisect.bisect(pool_cum, rng.random() * pool_cum[-1])]
            placements = [publisher.placements[rng.randrange(len(publisher.placements))]]
            if len(publisher.placements) > 1 and rng.random() < p.multi_imp_share:
                others = [pl for pl in publisher.placements if pl is not placements[0]]
                placements.append(others[rng.randrange(len(others))])
        seller = SELLERS[bisect.bisect(self._seller_cum, rng.random() * self._seller_cum[-1])]
        auction_type = 1 if rng.random() < seller.first_price_share else 2
        tmax = rng.choices(seller.tmax_choices, weights=seller.tmax_weights)[0]
        local_hour = hour_of_week(sim_ts, UTC_OFFSET_HOURS[country])
        currency = vocab.COUNTRY_CURRENCY.get(country, "USD")
        fx = vocab.FX_PER_USD_MICROS[currency]
        slots = []
        for n, placement in enumerate(placements, 1):
            competing = 0
            median = self.median_price_usd(user, placement, local_hour % 24)
            if rng.random() >= p.no_competition_share:
                competing = round(median * rng.lognormvariate(0.0, p.price_sigma) * 1_000_000)
            slots.append(
                Slot(
                    imp_id=str(n),
                    placement=placement,
                    floor=_to_currency(placement.floor_usd_micros, fx),
                    floor_currency=currency,
                    deals=placement.deals,
                    competing_usd_micros=competing,
                    median_usd_micros=round(median * 1_000_000),
                )
            )
        gdpr = country in EU_COUNTRIES
        consent = ""
        if gdpr and rng.random() >= p.missing_consent_share:
            consent = self.consent_string(user)
        us_privacy = ""
        if country == "USA":
            us_privacy = "1YYN" if rng.random() < 0.12 else "1YNN"
        return Opportunity(
            sim_ts=sim_ts,
            local_hour=local_hour,
            seller=seller,
            publisher=publisher,
            user=user,
            connection_type=CONNECTION_TYPES[
                bisect.bisect(CONNECTION_CUM, rng.random() * CONNECTION_CUM[-1])
            ],
            slots=tuple(slots),
            tmax_ms=tmax,
            auction_type=auction_type,
            gdpr=gdpr,
            consent=consent,
            consent_ok=gdpr and bool(consent) and user.consent_given and user.vendor_allowed,
            coppa=publisher.coppa or rng.random() < p.random_coppa_share,
            us_privacy=us_privacy,
        )

    def median_price_usd(self, user: User, placement: Placement, local_hour: int) -> float:
        """Median of the best competing bid (CPM, USD) for this user on this placement."""
        return (
            FORMAT_PRICE_USD[placement.format]
            * COUNTRY_PRICE_TIER.get(user.country, 0.3)
            * SIZE_PRICE.get(placement.size, 1.0)
            * (2.5 if placement.interstitial else 1.0)
            * DEVICE_PRICE.get(user.device_type, 1.0)
            * math.exp(0.5 * placement.quality)
            * user.value
            * (1.0 + 0.1 * math.cos(2 * math.pi * (local_hour - 21) / 24))
        )

    # -- consent -------------------------------------------------------------------------------

    def consent_string(self, user: User) -> str:
        """The user's TC string (cached): what the publisher's CMP recorded for them."""
        cached = self._consents.get(user.index)
        if cached is not None:
            return cached
        r = random.Random(self.seed * 1_000_003 + user.index)
        vendors = {r.randrange(1, 1200) for _ in range(r.randrange(5, 40))}
        vendors.discard(self.params.vendor_id)
        purposes: frozenset[int] = frozenset()
        if user.consent_given:
            purposes = frozenset(range(1, 5)) | frozenset(
                x for x in range(5, 11) if r.random() < 0.7
            )
            if user.vendor_allowed:
                vendors.add(self.params.vendor_id)
        created = 17_000_000_000 + r.randrange(0, 50_000_000)  # deciseconds, 2023-2024
        text = tcf.encode(
            tcf.TcfConsent(
                created_ds=created,
                last_updated_ds=created + r.randrange(0, 10_000_000),
                cmp_id=r.choice((10, 28, 68, 134, 300)),
                cmp_version=r.randrange(1, 30),
                consent_screen=1,
                consent_language=user.language.upper(),
                vendor_list_version=r.randrange(150, 200),
                purposes_consent=purposes,
                purposes_li_transparency=frozenset((2, 7, 8, 9, 10)),
                publisher_cc=user.country[:2],
                vendor_consents=frozenset(vendors),
                vendor_legitimate_interests=frozenset(v for v in vendors if v % 3 == 0),
            )
        )
        self._consents[user.index] = text
        return text

    # -- the truth -----------------------------------------------------------------------------

    def _campaign(self, campaign_id: int) -> _CampaignTruth:
        truth = self._campaigns.get(campaign_id)
        if truth is None:
            r = np.random.default_rng([self.seed, 1, campaign_id % (1 << 63)])
            truth = _CampaignTruth(
                latent=tuple(float(x) for x in r.normal(0.0, 0.55, size=LATENT_DIM)),
                ctr_bias=float(r.normal(0.0, 0.25)),
                install_latent=tuple(float(x) for x in r.normal(0.0, 0.4, size=LATENT_DIM)),
                install_bias=float(r.normal(0.0, 0.3)),
                category_affinity={
                    c: float(a)
                    for c, a in zip(
                        vocab.IAB_CATEGORIES,
                        r.normal(0.0, 0.3, size=len(vocab.IAB_CATEGORIES)),
                        strict=True,
                    )
                },
            )
            self._campaigns[campaign_id] = truth
        return truth

    @property
    def segment_directions(self) -> np.ndarray:
        """Each segment's direction in the latent space (a copy; for reports)."""
        return self._segment_directions.copy()

    def campaign_latent(self, campaign_id: int) -> tuple[float, ...]:
        """The campaign's latent interests (the truth's user x campaign term; for reports)."""
        return self._campaign(campaign_id).latent

    def _creative_bias(self, creative_id: int) -> float:
        bias = self._creatives.get(creative_id)
        if bias is None:
            r = np.random.default_rng([self.seed, 2, creative_id % (1 << 63)])
            bias = float(r.normal(0.0, 0.2))
            self._creatives[creative_id] = bias
        return bias

    def p_click(self, opp: Opportunity, slot: Slot, campaign_id: int, creative_id: int) -> float:
        """The TRUE probability that this impression is clicked."""
        user = opp.user
        if user.crawler:
            return 0.0
        pl = slot.placement
        camp = self._campaign(campaign_id)
        category = opp.publisher.categories[0] if opp.publisher.categories else ""
        hour = opp.local_hour % 24
        x = (
            self.params.ctr_base_logit
            + FORMAT_CTR[pl.format]
            + SIZE_CTR.get(pl.size, 0.0)
            + (0.5 if pl.interstitial else 0.0)
            + (0.3 if pl.rewarded else 0.0)
            + DEVICE_CTR.get(user.device_type, 0.0)
            + (0.1 if user.os == "ios" else 0.0)
            + (0.05 if opp.connection_type == 2 else 0.0)
            + 0.6 * pl.quality
            + 0.15 * math.cos(2 * math.pi * (hour - 21) / 24)
            + _dot(user.latent, camp.latent)
            + camp.ctr_bias
            + camp.category_affinity.get(category, 0.0)
            + self._creative_bias(creative_id)
        )
        return logistic(x)

    def p_install_given_click(self, opp: Opportunity, slot: Slot, campaign_id: int) -> float:
        """The TRUE probability that a click on this impression leads to an install."""
        user = opp.user
        if user.crawler:
            return 0.0
        camp = self._campaign(campaign_id)
        x = (
            self.params.install_base_logit
            + camp.install_bias
            + _dot(user.latent, camp.install_latent)
            + (-0.15 if user.os == "ios" else 0.0)
            + 0.2 * math.log(COUNTRY_PRICE_TIER.get(user.country, 0.3))
            + (0.3 if slot.placement.rewarded else 0.0)
        )
        return logistic(x)


def _to_currency(usd_micros: int, fx_per_usd_micros: int) -> int:
    """A USD amount in another currency, rounded to the cent as exchanges quote floors."""
    if usd_micros == 0:
        return 0
    value = usd_micros * fx_per_usd_micros // 1_000_000
    return round(value, -4)
