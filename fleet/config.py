"""The campaign configuration every service reads: advertisers, campaigns, creatives, targeting.

These are the in-memory shapes of the config tables (fleet/db/migrations) that campaign managers
edit. Money is integer micros of the campaign currency. An empty targeting list means "any".
Every row carries the ``version`` the database gave it; caches never replace a newer version with
an older one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

GoalType = Literal["CPM", "CPC", "CPI", "CPA"]
PacingMode = Literal["even", "asap"]
Status = Literal["active", "paused", "archived"]
CreativeFormat = Literal["banner", "video", "native"]


class Advertiser(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    domain: str
    status: Status = "active"
    version: int = 0


class Targeting(msgspec.Struct, frozen=True, kw_only=True):
    countries: tuple[str, ...] = ()  # ISO-3166-1 alpha-3, as OpenRTB geo.country
    os: tuple[str, ...] = ()  # lower case: "ios", "android", "windows", ...
    device_types: tuple[int, ...] = ()  # OpenRTB device.devicetype
    apps_allowed: tuple[str, ...] = ()  # app bundles
    apps_blocked: tuple[str, ...] = ()
    sites_allowed: tuple[str, ...] = ()  # site domains
    sites_blocked: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # IAB content categories of the inventory
    sizes: tuple[str, ...] = ()  # "300x250"
    hours_of_week: tuple[int, ...] = ()  # 0 = Monday 00:00 in the campaign's timezone .. 167
    segments: tuple[str, ...] = ()  # user segments (user.data[].segment[].id)
    deal_ids: tuple[str, ...] = ()  # bid only through these deals when non-empty
    version: int = 0


class FrequencyCap(msgspec.Struct, frozen=True, kw_only=True):
    max_impressions: int
    period_seconds: int


class Creative(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    campaign_id: int
    format: CreativeFormat
    w: int
    h: int
    markup: str  # template; ${AUCTION_PRICE} and our own ${CLICK_URL}/${IMP_URL} are filled later
    adomain: tuple[str, ...]
    categories: tuple[str, ...] = ()  # IAB categories of the ad itself (checked against bcat)
    attributes: tuple[int, ...] = ()  # OpenRTB creative attributes (checked against battr)
    mimes: tuple[str, ...] = ()  # video
    duration: int = 0  # video seconds
    status: Status = "active"
    version: int = 0
    # where a click lands (a landing page or a measurement partner's link), with the macros of
    # fleet.clickthrough; the tracker's /click redirects there
    click_url: str = ""
    paused_by: str = ""  # who paused it when not the campaign manager (a rule), and why
    pause_reason: str = ""

    @property
    def size(self) -> str:
        return f"{self.w}x{self.h}"


class Campaign(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    advertiser_id: int
    name: str
    goal_type: GoalType
    goal_price_micros: int  # per goal event; for CPM, per 1000 impressions
    max_bid_cpm_micros: int  # never bid above this CPM
    daily_budget_micros: int  # 0: no daily limit (the total still applies)
    total_budget_micros: int  # 0: no total limit
    currency: str = "USD"
    flight_start: datetime | None = None
    flight_end: datetime | None = None
    timezone: str = "UTC"
    pacing_mode: PacingMode = "even"
    status: Status = "active"
    targeting: Targeting = Targeting()
    frequency_caps: tuple[FrequencyCap, ...] = ()
    creatives: tuple[Creative, ...] = ()
    version: int = 0
    attribution_window_seconds: int = 7 * 86400  # click to install (and install to event)
    goal_event: str = ""  # CPA: the in-app event that counts as an activation ("": installs)
    paused_by: str = ""  # who paused it when not the campaign manager (a rule), and why
    pause_reason: str = ""


class ConfigSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the bid path needs from the config database at one moment."""

    advertisers: tuple[Advertiser, ...]
    campaigns: tuple[Campaign, ...]
    version: int  # the highest row version in the snapshot
    # Exchange rates to the bidding currency for floors in other currencies: units of the
    # currency per 1 USD, as integers scaled by 1e6 (so 0.92 EUR per USD is 920_000).
    fx_per_usd_micros: dict[str, int] = msgspec.field(default_factory=dict)

    def campaign(self, campaign_id: int) -> Campaign | None:
        for c in self.campaigns:
            if c.id == campaign_id:
                return c
        return None
