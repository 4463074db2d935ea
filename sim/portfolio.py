"""Synthetic portfolios for demos, benchmarks and tests: ``generate`` (a realistic mix, from a
seed) and ``catch_all`` (one campaign that bids on nearly anything). Deployments never need
them; campaign managers write their own documents, which ``fleet.portfolio`` validates and loads.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.money import MICROS_PER_UNIT, decimal_string
from fleet.portfolio import FORMATS, GOAL_TYPES
from sim import vocabulary as vocab

_BANNER_MARKUP = (
    '<a href="${{CLICK_URL}}"><img src="https://cdn.{domain}/c/{cid}.png" '
    'width="{w}" height="{h}" alt="{name}"></a><img src="${{IMP_URL}}" width="1" '
    'height="1" style="display:none">'
)
_VIDEO_MARKUP = (
    '<VAST version="4.0"><Ad id="{cid}"><InLine><AdSystem>rtbfleet</AdSystem>'
    "<AdTitle>{name}</AdTitle><Impression><![CDATA[${{IMP_URL}}]]></Impression><Creatives>"
    "<Creative><Linear><Duration>00:00:{duration:02d}</Duration><VideoClicks><ClickThrough>"
    "<![CDATA[${{CLICK_URL}}]]></ClickThrough></VideoClicks><MediaFiles><MediaFile "
    'delivery="progressive" type="video/mp4" width="{w}" height="{h}">'
    "<![CDATA[https://cdn.{domain}/v/{cid}.mp4]]></MediaFile></MediaFiles></Linear></Creative>"
    "</Creatives></InLine></Ad></VAST>"
)
_NATIVE_MARKUP = (
    '{{"native":{{"ver":"1.2","assets":[{{"id":1,"title":{{"text":"{name}"}}}},'
    '{{"id":2,"img":{{"url":"https://cdn.{domain}/n/{cid}.jpg","w":{w},"h":{h}}}}}],'
    '"link":{{"url":"${{CLICK_URL}}"}},"imptrackers":["${{IMP_URL}}"]}}}}'
)

# Where a click lands: the advertiser's page, with the click id the way measurement partners'
# links carry it (a postback brings it back)
_CLICK_URL = "https://{domain}/landing?c=${{CAMPAIGN_ID}}&cr=${{CREATIVE_ID}}&clickid=${{CLICK_ID}}"


def _pick(rng: random.Random, weights: Mapping[Any, float], k: int) -> list[Any]:
    keys = list(weights)
    chosen: list[Any] = []
    while len(chosen) < min(k, len(keys)):
        choice = rng.choices(keys, weights=[weights[x] for x in keys])[0]
        if choice not in chosen:
            chosen.append(choice)
    return chosen


def generate(
    count: int, seed: int = 1, creatives_per_campaign: int = 5, now: datetime | None = None
) -> dict[str, Any]:
    """A realistic synthetic portfolio of ``count`` campaigns (document form), from a seed.

    A mix of goals (CPM brand, CPC performance, CPI app installs, CPA), budgets from tens to
    thousands a day, targeting from broad to narrow, frequency caps, deals and dayparting on a
    share, and about one campaign in ten left as broad as possible so that most traffic is
    eligible for something.
    """
    rng = random.Random(seed)
    start = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    n_adv = max(1, count // 4)
    advertisers = [
        {"id": i + 1, "name": d.split(".")[0].title(), "domain": d}
        for i, d in enumerate(
            (vocab.ADVERTISER_DOMAINS * (n_adv // len(vocab.ADVERTISER_DOMAINS) + 1))[:n_adv]
        )
    ]
    for i, a in enumerate(advertisers):
        if i >= len(vocab.ADVERTISER_DOMAINS):
            a["domain"] = f"brand{i + 1}.example"
            a["name"] = f"Brand {i + 1}"
    campaigns = []
    creative_id = 1
    for n in range(count):
        adv = advertisers[n % n_adv]
        goal = rng.choices(GOAL_TYPES, weights=[0.25, 0.35, 0.3, 0.1])[0]
        goal_price = {
            "CPM": rng.choice([1.5, 2.0, 3.0, 4.5]) * MICROS_PER_UNIT,
            "CPC": rng.choice([0.2, 0.35, 0.5, 0.8]) * MICROS_PER_UNIT,
            "CPI": rng.choice([1.5, 2.5, 4.0]) * MICROS_PER_UNIT,
            "CPA": rng.choice([5.0, 8.0, 12.0]) * MICROS_PER_UNIT,
        }[goal]
        daily = rng.choice([50, 100, 250, 500, 1000, 2500]) * MICROS_PER_UNIT
        broad = n % 10 == 0
        targeting: dict[str, Any] = {}
        if not broad:
            if rng.random() < 0.7:
                targeting["countries"] = sorted(_pick(rng, vocab.COUNTRIES, rng.randint(1, 4)))
            if rng.random() < 0.5:
                targeting["os"] = sorted(_pick(rng, vocab.OPERATING_SYSTEMS, rng.randint(1, 2)))
            if rng.random() < 0.3:
                targeting["device_types"] = sorted(_pick(rng, vocab.DEVICE_TYPES, 2))
            if rng.random() < 0.15:
                targeting["apps_allowed"] = sorted(rng.sample(vocab.APP_BUNDLES, 5))
            if rng.random() < 0.2:
                targeting["sites_blocked"] = sorted(rng.sample(vocab.SITE_DOMAINS, 2))
            if rng.random() < 0.2:
                targeting["categories"] = sorted(rng.sample(vocab.IAB_CATEGORIES, 3))
            if rng.random() < 0.15:
                first = rng.randint(6, 10)
                targeting["hours_of_week"] = [
                    d * 24 + h for d in range(7) for h in range(first, first + 12)
                ]
            if rng.random() < 0.1:
                targeting["segments"] = sorted(rng.sample(vocab.USER_SEGMENTS, 4))
            if rng.random() < 0.08:
                targeting["deal_ids"] = sorted(rng.sample(vocab.DEAL_IDS, 2))
        creatives = []
        for k in range(creatives_per_campaign):
            fmt = (
                "banner" if broad and k < 3 else rng.choices(FORMATS, weights=[0.6, 0.25, 0.15])[0]
            )
            if broad and k == 3:
                fmt = "video"
            if broad and k == 4:
                fmt = "native"
            size = rng.choice(
                {
                    "banner": vocab.BANNER_SIZES,
                    "video": vocab.VIDEO_SIZES,
                    "native": vocab.NATIVE_SIZES,
                }[fmt]
            )
            if broad and fmt == "banner":
                size = vocab.BANNER_SIZES[k]
            w, h = (int(x) for x in size.split("x"))
            duration = rng.choice([15, 30]) if fmt == "video" else 0
            template = {"banner": _BANNER_MARKUP, "video": _VIDEO_MARKUP, "native": _NATIVE_MARKUP}[
                fmt
            ]
            creative: dict[str, Any] = {
                "id": creative_id,
                "format": fmt,
                "w": w,
                "h": h,
                "markup": template.format(
                    domain=adv["domain"],
                    cid=creative_id,
                    w=w,
                    h=h,
                    name=adv["name"],
                    duration=duration,
                ),
                "adomain": [adv["domain"]],
                "categories": [rng.choice(vocab.IAB_CATEGORIES)],
                "click_url": _CLICK_URL.format(domain=adv["domain"]),
            }
            if fmt == "video":
                creative["mimes"] = ["video/mp4"]
                creative["duration"] = duration
            creatives.append(creative)
            creative_id += 1
        campaign: dict[str, Any] = {
            "id": n + 1,
            "advertiser_id": adv["id"],
            "name": f"{adv['name']} {goal} #{n + 1}",
            "goal_type": goal,
            "goal_price": decimal_string(int(goal_price)),
            "max_bid_cpm": decimal_string(rng.choice([4, 6, 8, 12, 20]) * MICROS_PER_UNIT),
            "daily_budget": decimal_string(daily),
            "total_budget": decimal_string(daily * rng.choice([7, 30, 90])),
            "currency": "USD",
            "flight_start": start.isoformat(),
            "flight_end": (start + timedelta(days=rng.choice([30, 60, 90]))).isoformat(),
            "timezone": rng.choice(vocab.TIMEZONES),
            "pacing_mode": "asap" if rng.random() < 0.15 else "even",
            "targeting": targeting,
            "creatives": creatives,
        }
        if not broad and rng.random() < 0.3:
            campaign["frequency_caps"] = [
                {"max_impressions": rng.choice([3, 5, 10]), "period_seconds": 86400}
            ]
        campaigns.append(campaign)
    return {"advertisers": advertisers, "campaigns": campaigns}


def catch_all() -> dict[str, Any]:
    """A small portfolio that bids on nearly any valid request: every format and common size,
    no targeting limits, generous prices. For conformance runs and smoke tests."""
    banner = (
        *vocab.BANNER_SIZES,
        "300x50",
        "320x100",
        "970x250",
        "468x60",
        "120x600",
        "336x280",
        "250x250",
        "480x320",
        "1024x768",
        "768x1024",
        "300x1050",
        "970x90",
    )
    video = (*vocab.VIDEO_SIZES, "640x480", "1920x1080", "300x250")
    native = (*vocab.NATIVE_SIZES, "300x250", "1200x628", "150x150")
    templates = {"banner": _BANNER_MARKUP, "video": _VIDEO_MARKUP, "native": _NATIVE_MARKUP}
    creatives: list[dict[str, Any]] = []
    for fmt, sizes in (("banner", banner), ("video", video), ("native", native)):
        for size in sizes:
            cid = len(creatives) + 1
            w, h = (int(x) for x in size.split("x"))
            markup = templates[fmt].format(
                domain="catchall.example", cid=cid, w=w, h=h, name="Catch-all", duration=15
            )
            creative: dict[str, Any] = {
                "id": cid,
                "format": fmt,
                "w": w,
                "h": h,
                "markup": markup,
                "adomain": ["catchall.example"],
                "categories": ["IAB3"],
                "click_url": _CLICK_URL.format(domain="catchall.example"),
            }
            if fmt == "video":
                creative["mimes"] = [
                    "video/mp4",
                    "video/webm",
                    "video/x-flv",
                    "application/javascript",
                ]
                creative["duration"] = 15
            creatives.append(creative)
    return {
        "advertisers": [{"id": 1, "name": "Catch-all", "domain": "catchall.example"}],
        "campaigns": [
            {
                "id": 1,
                "advertiser_id": 1,
                "name": "Catch-all",
                "goal_type": "CPM",
                "goal_price": "5.00",
                "max_bid_cpm": "50.00",
                "daily_budget": "100000.00",
                "total_budget": "1000000.00",
                "currency": "USD",
                "pacing_mode": "asap",
                "creatives": creatives,
            }
        ],
    }
