"""Who is in the synthetic market: sellers (exchanges), publishers and their placements, users and
their devices. Built once from a numpy Generator, so the same seed gives the same population.
"""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import numpy.typing as npt

from sim import vocabulary as vocab

LATENT_DIM = 4
# A user's latent interests are N(0, LATENT_SD^2) per dimension; the user has segment j when
# directions[j] . latent + N(0, SEGMENT_NOISE_SD^2) > SEGMENT_THRESHOLD (sim.bounds inverts it).
LATENT_SD = 0.8
SEGMENT_NOISE_SD = 0.5
SEGMENT_THRESHOLD = 1.1
SEGMENT_SOURCE = "simdmp"

# Hours to add to UTC for the local time of most of a country's users.
UTC_OFFSET_HOURS = {
    "USA": -5,
    "GBR": 0,
    "DEU": 1,
    "FRA": 1,
    "ESP": 1,
    "ITA": 1,
    "BRA": -3,
    "IND": 5,
    "JPN": 9,
    "CAN": -5,
    "MEX": -6,
}
EU_COUNTRIES = frozenset({"GBR", "DEU", "FRA", "ESP", "ITA"})  # GDPR applies (UK GDPR too)
LANGUAGE = {
    "USA": "en",
    "GBR": "en",
    "CAN": "en",
    "IND": "en",
    "DEU": "de",
    "FRA": "fr",
    "ESP": "es",
    "MEX": "es",
    "ITA": "it",
    "BRA": "pt",
    "JPN": "ja",
}

CRAWLER_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "python-requests/2.31.0",
    "curl/8.4.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
)
_DEVICES = {
    "android": (("samsung", "SM-S911B"), ("Google", "Pixel 8"), ("Xiaomi", "23049PCD8G")),
    "ios": (("Apple", "iPhone15,2"), ("Apple", "iPhone14,5"), ("Apple", "iPad13,18")),
    "windows": (("Microsoft", "PC"),),
    "macos": (("Apple", "Macintosh"),),
}
_OS_VERSIONS = {
    "android": ("12", "13", "14"),
    "ios": ("16.6", "17.1", "17.4"),
    "windows": ("10", "11"),
    "macos": ("13.6", "14.2"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Seller:
    """An exchange (SSP) sending us traffic: its auction type and deadline habits."""

    id: str
    domain: str  # schain asi
    share: float
    first_price_share: float
    tmax_choices: tuple[int, ...]  # 0 = tmax absent
    tmax_weights: tuple[float, ...]


SELLERS = (
    Seller("ssp-a", "ssp-a.example", 0.45, 1.0, (120, 0), (0.9, 0.1)),
    Seller("ssp-b", "ssp-b.example", 0.35, 0.0, (80, 100, 150), (0.3, 0.5, 0.2)),
    Seller("ssp-c", "ssp-c.example", 0.20, 0.75, (200, 250, 300, 0), (0.3, 0.3, 0.2, 0.2)),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Deal:
    id: str
    floor_usd_micros: int  # CPM
    auction_type: int
    price_multiplier: float  # competing demand in the deal is this much stronger


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """An ad unit of a publisher: what it sells and at which floor."""

    tag_id: str
    format: str  # "banner" | "video" | "native"
    size: str  # "300x250"
    w: int
    h: int
    pos: int  # OpenRTB ad position
    interstitial: bool
    rewarded: bool
    quality: float  # latent: better placements are clicked more and priced higher
    floor_usd_micros: int  # CPM; 0 = no floor
    deals: tuple[Deal, ...]
    private_auction: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Publisher:
    id: str
    kind: str  # "app" | "site"
    name: str  # bundle or domain
    categories: tuple[str, ...]
    coppa: bool
    placements: tuple[Placement, ...]
    popularity: float


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    index: int
    country: str
    os: str
    osv: str
    device_type: int
    make: str
    model: str
    ifa: str  # "" on the web; all zeros when limited
    lmt: bool
    ua: str
    ip: str
    language: str
    buyeruid: str
    yob: int
    segments: tuple[str, ...]
    latent: tuple[float, ...]
    value: float  # multiplies the competing market price for this user
    crawler: bool
    consent_given: bool  # GDPR: the user agreed to purposes 1-4 (EU only)
    vendor_allowed: bool  # and to our vendor


def _normalised(weights: list[float]) -> npt.NDArray[np.float64]:
    w = np.asarray(weights, dtype=np.float64)
    normalised: npt.NDArray[np.float64] = w / w.sum()
    return normalised


def _ua(os_name: str, osv: str, model: str, app: bool) -> str:
    if os_name == "android":
        wv = "; wv" if app else ""
        return (
            f"Mozilla/5.0 (Linux; Android {osv}; {model}{wv}) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36"
        )
    if os_name == "ios":
        v = osv.replace(".", "_")
        return (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {v} like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148"
        )
    if os_name == "macos":
        return (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.1 Safari/605.1.15"
        )
    return (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    )


def _ip(rng: np.random.Generator) -> str:
    while True:
        first = int(rng.integers(1, 224))
        if first not in (10, 100, 127, 169, 172, 192, 198, 203):
            break
    rest = rng.integers(0, 256, size=3)
    return f"{first}.{rest[0]}.{rest[1]}.{max(1, int(rest[2]))}"


def make_users(
    rng: np.random.Generator, count: int, segment_directions: np.ndarray, crawler_share: float
) -> list[User]:
    countries = list(vocab.COUNTRIES)
    cw = _normalised([vocab.COUNTRIES[c] for c in countries])
    device_types = list(vocab.DEVICE_TYPES)
    dw = _normalised([vocab.DEVICE_TYPES[d] for d in device_types])
    users = []
    for i in range(count):
        country = countries[int(rng.choice(len(countries), p=cw))]
        crawler = bool(rng.random() < crawler_share)
        device_type = 2 if crawler else device_types[int(rng.choice(len(device_types), p=dw))]
        if device_type == 2:
            os_name = "windows" if rng.random() < 0.7 else "macos"
        elif device_type == 3:
            os_name = "android"
        else:
            os_name = "ios" if rng.random() < 0.39 else "android"
        osv = str(rng.choice(_OS_VERSIONS[os_name]))
        make, model = _DEVICES[os_name][int(rng.integers(len(_DEVICES[os_name])))]
        latent = rng.normal(0.0, LATENT_SD, size=LATENT_DIM)
        noise = rng.normal(0.0, SEGMENT_NOISE_SD, size=len(segment_directions))
        scores = segment_directions @ latent + noise
        segments = tuple(vocab.USER_SEGMENTS[j] for j in np.flatnonzero(scores > SEGMENT_THRESHOLD))
        mobile = device_type in (1, 3, 4, 5)
        lmt = mobile and bool(rng.random() < (0.6 if os_name == "ios" else 0.08))
        ifa = ""
        if mobile:
            ifa = (
                "00000000-0000-0000-0000-000000000000"
                if lmt
                else str(uuid.UUID(bytes=rng.bytes(16), version=4))
            )
        ua = str(rng.choice(CRAWLER_UAS)) if crawler else _ua(os_name, osv, model, mobile)
        consent = country in EU_COUNTRIES and bool(rng.random() < 0.72)
        users.append(
            User(
                index=i,
                country=country,
                os=os_name,
                osv=osv,
                device_type=device_type,
                make=make,
                model=model,
                ifa=ifa,
                lmt=lmt,
                ua=ua,
                ip=("66.249.66." + str(int(rng.integers(1, 255)))) if crawler else _ip(rng),
                language=LANGUAGE.get(country, "en"),
                buyeruid=rng.bytes(10).hex() if rng.random() < 0.7 else "",
                yob=int(rng.integers(1955, 2008)),
                segments=segments,
                latent=tuple(float(x) for x in latent),
                value=float(np.exp(0.25 * latent[0] + rng.normal(0.0, 0.2))),
                crawler=crawler,
                consent_given=consent,
                vendor_allowed=consent and bool(rng.random() < 0.85),
            )
        )
    return users


_APP_UNITS = (
    ("banner", "320x50", 1, False, False),
    ("banner", "300x250", 3, False, False),
    ("banner", "320x480", 7, True, False),
    ("video", "320x480", 7, True, True),
    ("video", "1280x720", 7, True, False),
    ("native", "1200x627", 4, False, False),
)
_SITE_UNITS = (
    ("banner", "728x90", 1, False, False),
    ("banner", "300x250", 3, False, False),
    ("banner", "160x600", 3, False, False),
    ("banner", "300x600", 3, False, False),
    ("video", "640x360", 1, False, False),
    ("native", "1200x627", 4, False, False),
)
FORMAT_PRICE_USD = {"banner": 0.9, "video": 6.0, "native": 1.8}  # median clearing CPM, USA


def make_publishers(rng: np.random.Generator, placements: int) -> list[Publisher]:
    names = [("app", b) for b in vocab.APP_BUNDLES] + [("site", d) for d in vocab.SITE_DOMAINS]
    per_publisher = max(1, placements // len(names))
    publishers = []
    tag = 0
    for n, (kind, name) in enumerate(names):
        units = _APP_UNITS if kind == "app" else _SITE_UNITS
        cats = tuple(
            str(c)
            for c in rng.choice(vocab.IAB_CATEGORIES, size=int(rng.integers(1, 3)), replace=False)
        )
        publisher_quality = float(rng.normal(0.0, 0.35))
        units_here = []
        for _ in range(per_publisher):
            fmt, size, pos, instl, rewarded = units[int(rng.integers(len(units)))]
            w, h = (int(x) for x in size.split("x"))
            quality = publisher_quality + float(rng.normal(0.0, 0.2))
            median = FORMAT_PRICE_USD[fmt] * (2.5 if instl else 1.0)
            floor = 0.0
            if rng.random() < 0.75:
                floor = round(median * float(rng.lognormal(np.log(0.35), 0.4)), 2)
            deals: list[Deal] = []
            if rng.random() < 0.07:
                for d in rng.choice(
                    len(vocab.DEAL_IDS), size=int(rng.integers(1, 3)), replace=False
                ):
                    deals.append(
                        Deal(
                            id=vocab.DEAL_IDS[int(d)],
                            floor_usd_micros=round(
                                round(median * float(rng.uniform(0.8, 1.6)), 2) * 1_000_000
                            ),
                            auction_type=int(rng.choice((1, 2, 3), p=(0.5, 0.3, 0.2))),
                            price_multiplier=float(rng.uniform(1.2, 1.8)),
                        )
                    )
            tag += 1
            units_here.append(
                Placement(
                    tag_id=f"tag-{tag:05d}",
                    format=fmt,
                    size=size,
                    w=w,
                    h=h,
                    pos=pos,
                    interstitial=instl,
                    rewarded=rewarded,
                    quality=quality,
                    floor_usd_micros=round(floor * 1_000_000),
                    deals=tuple(d for d in deals),
                    private_auction=bool(deals) and bool(rng.random() < 0.25),
                )
            )
        publishers.append(
            Publisher(
                id=f"pub-{n:03d}",
                kind=kind,
                name=name,
                categories=cats,
                coppa=name.endswith("kidsabc"),
                placements=tuple(units_here),
                popularity=float(rng.pareto(1.5) + 0.2),
            )
        )
    return publishers
