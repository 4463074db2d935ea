"""The shared vocabulary of the synthetic market: what generated portfolios target and what the
exchange simulator sends. Real deployments never read this module; demos and benchmarks do, so
that a generated portfolio and simulated traffic speak of the same countries, apps and sizes.
"""

from __future__ import annotations

from typing import Final

# ISO-3166-1 alpha-3 (OpenRTB geo.country), with a rough share of traffic.
COUNTRIES: Final = {
    "USA": 0.30,
    "GBR": 0.08,
    "DEU": 0.08,
    "FRA": 0.07,
    "BRA": 0.08,
    "IND": 0.12,
    "JPN": 0.06,
    "CAN": 0.05,
    "MEX": 0.06,
    "ESP": 0.05,
    "ITA": 0.05,
}
# Currency an exchange in that country quotes floors in (some floors arrive in EUR, GBP, ...).
COUNTRY_CURRENCY: Final = {
    "USA": "USD",
    "GBR": "GBP",
    "DEU": "EUR",
    "FRA": "EUR",
    "ESP": "EUR",
    "ITA": "EUR",
    "BRA": "USD",
    "IND": "USD",
    "JPN": "USD",
    "CAN": "USD",
    "MEX": "USD",
}
# Units of currency per 1 USD, scaled by 1e6 (ConfigSnapshot.fx_per_usd_micros).
FX_PER_USD_MICROS: Final = {"USD": 1_000_000, "EUR": 920_000, "GBP": 790_000, "JPY": 150_000_000}

OPERATING_SYSTEMS: Final = {"android": 0.55, "ios": 0.35, "windows": 0.06, "macos": 0.04}
# OpenRTB device types: 1 mobile/tablet, 2 PC, 4 phone, 5 tablet, 3 connected TV.
DEVICE_TYPES: Final = {4: 0.70, 5: 0.12, 2: 0.15, 3: 0.03}
CONNECTION_TYPES: Final = {2: 0.55, 6: 0.30, 5: 0.10, 3: 0.05}  # wifi, 4G, 3G, cellular

BANNER_SIZES: Final = ("320x50", "300x250", "728x90", "320x480", "160x600", "300x600")
VIDEO_SIZES: Final = ("640x360", "1280x720", "320x480")
NATIVE_SIZES: Final = ("1200x627",)
VIDEO_MIMES: Final = ("video/mp4", "video/webm")

IAB_CATEGORIES: Final = (
    "IAB1",  # arts & entertainment
    "IAB2",  # automotive
    "IAB3",  # business
    "IAB5",  # education
    "IAB7",  # health & fitness
    "IAB8",  # food & drink
    "IAB9",  # hobbies
    "IAB12",  # news
    "IAB13",  # personal finance
    "IAB17",  # sports
    "IAB19",  # technology
    "IAB20",  # travel
    "IAB22",  # shopping
    "IAB9-30",  # video & computer games
)
SENSITIVE_CATEGORIES: Final = ("IAB7-39", "IAB8-18", "IAB25", "IAB26")  # often in bcat

APP_BUNDLES: Final = tuple(
    f"com.example.{name}"
    for name in (
        "puzzlequest",
        "newsdaily",
        "fitlife",
        "recipebox",
        "citytransit",
        "wordgarden",
        "soccerlive",
        "photoedit",
        "budgetpal",
        "chessclub",
        "weathernow",
        "musicstream",
        "runtracker",
        "cardsolitaire",
        "travelmate",
        "shopdeals",
        "podcastly",
        "kidsabc",
        "farmtycoon",
        "racingpro",
    )
)
SITE_DOMAINS: Final = tuple(
    f"{name}.example.com"
    for name in (
        "dailynews",
        "techreview",
        "autoworld",
        "foodies",
        "travelguide",
        "financetoday",
        "sportscenter",
        "healthhub",
        "gamerzone",
        "styleweekly",
        "homegarden",
        "moviebuzz",
    )
)
ADVERTISER_DOMAINS: Final = tuple(
    f"{name}.example"
    for name in (
        "shoply",
        "gamestudio",
        "fintrack",
        "travelly",
        "foodbox",
        "carmaker",
        "streamflix",
        "learnit",
        "fitgear",
        "bankone",
        "casinoroyal",
        "vapeworld",
    )
)
USER_SEGMENTS: Final = tuple(f"seg-{i:03d}" for i in range(40))
DEAL_IDS: Final = tuple(f"deal-{i:03d}" for i in range(12))
TIMEZONES: Final = ("UTC", "America/New_York", "Europe/London", "Europe/Berlin", "Asia/Tokyo")
