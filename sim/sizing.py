"""Budgets sized against the simulator's own supply, so that a demo can show pacing.

A generated portfolio's budgets mean nothing until they are set against what the run can buy:
a demo of 150 s at 400 requests a second offers 60,000 requests for the whole simulated day,
a few hundred dollars of clearing prices, so budgets of hundreds a day are never reached and
pacing has nothing to do. ``size_budgets`` sets each campaign's daily budget from the
simulator's truth instead:

1. **Supply**: ``samples`` opportunities drawn from the market over the simulated span the run
   covers, as the schedule spreads them (the daily cycle), each weighted by how many requests
   it stands for. A campaign is eligible for a slot when its targeting and creatives allow it
   (the rules of ``fleet.config.Targeting``: countries, operating systems, device types, apps
   and sites, content categories with their tier-1 parents, hours of week in the campaign's
   timezone, user segments only with consent to personalise, deals; a creative of the slot's
   format, and of its size for banners; no bid below the floor; crawlers filtered out).
2. **Cost**: on an eligible slot the campaign bids what a calibrated bidder would (its goal
   price times the slot's TRUE click and install rates, less the margin, at most its maximum
   bid) and clears the sampled auction (``sim.auction.clear``): the expected spend of one
   opportunity is its clearing cost when it wins. Several campaigns eligible for one slot
   share it: each counts ``1 / k`` of it (the bidder sends one bid per imp).
3. **Budget**: the pacer's plan (``pacing.gate.make_plan``: the campaign's timezone, flight
   and local days, uniform until it has learnt a traffic profile) says which share of a daily
   budget falls in each simulated hour of the run. The budget is the largest for which every
   hour's plan is at most ``1 / ratio`` of that hour's supply: ``ratio`` 2.5 for most
   campaigns (at least 1.5x the supply they need even where the estimate is off by a third),
   0.6 for every tenth on purpose (supply-limited: it cannot reach its plan). A budget is at
   least three impressions at the campaign's maximum bid: one the sampled supply hardly
   reaches is supply-limited too. An "as fast as possible" campaign is due each local day's
   budget at the day's start: its budget is ``1 / ratio`` of its supply over the least
   supplied local day the run touches (within the run).

Over a run that covers 6.4 simulated hours the budget is still a daily one: the plan (and the
demo report's utilisation) counts only what falls within the covered hours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np

from fleet.money import MICROS_PER_UNIT, decimal_string
from fleet.plan import local_day, zone
from sim.auction import clear
from sim.market import Market, Opportunity, Slot
from sim.pacing_report import planned_between

SECONDS_PER_HOUR: Final = 3600
PACING_STEP_SIM_S: Final = 300.0  # a demo's pacer steps every five simulated minutes
ENOUGH: Final = 2.5  # supply over need of most campaigns
LIMITED: Final = 0.6  # supply over need of the supply-limited ones
MARGIN: Final = 0.2  # second price: what a bidder keeps below its value (its default margin)
SHADE: Final = 0.65  # first price: a shaded bid's share of the value (about what the bidder's
# shader bids against a log-normal market with sigma 0.6 around the value)


@dataclass(frozen=True, slots=True)
class Span:
    """The simulated time a run covers and the requests it offers over it."""

    start: float  # epoch seconds
    seconds: float
    requests: float  # offered over the span

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def hours(self) -> int:
        return max(1, math.ceil(self.seconds / SECONDS_PER_HOUR))


def fleet_defaults(environ: MutableMapping[str, str], time_scale: float) -> None:
    """Pacing settings for a demo, unless set. The pacer's cadence is in real seconds (a
    production pacer steps every 5 s); at 576 simulated seconds a second that is a step every
    48 simulated minutes, each granting up to two steps of plan ahead: hours are spent in
    bursts. A demo steps every five simulated minutes instead (at least every 0.2 s of real
    time), and its bidders report as often. Its processes share one host clock: the clock skew
    the pacer allows for (2 s, 19 simulated minutes at 576x, during which billed spend is
    counted twice) is 50 ms."""
    real = min(5.0, max(0.2, PACING_STEP_SIM_S / time_scale))
    environ.setdefault("RTBFLEET_PACER_INTERVAL_SECONDS", f"{real:.3f}")
    environ.setdefault("RTBFLEET_BIDDER_PACING_REPORT_SECONDS", f"{real:.3f}")
    environ.setdefault("RTBFLEET_PACER_CLOCK_SKEW_SECONDS", "0.05")


def _categories(publisher_categories: Sequence[str]) -> frozenset[str]:
    return frozenset(p for c in publisher_categories for p in (c, c.split("-", 1)[0]))


def _hour_of_week(tz_name: str, at: float) -> int:
    local = datetime.fromtimestamp(at, zone(tz_name))
    return local.weekday() * 24 + local.hour


def _creative(campaign: Mapping[str, Any], slot: Slot) -> int | None:
    """The id of a creative of the campaign that fits the slot (None: none does)."""
    pl = slot.placement
    for cr in campaign["creatives"]:
        if cr["format"] != pl.format:
            continue
        if pl.format == "banner" and (cr["w"], cr["h"]) != (pl.w, pl.h):
            continue
        return int(cr["id"])
    return None


def personalised(opp: Opportunity) -> bool:
    """Whether privacy lets a bidder use the user's data (segments, frequency) on ``opp``."""
    return not opp.coppa and (not opp.gdpr or opp.consent_ok) and opp.us_privacy != "1YYN"


def eligible(campaign: Mapping[str, Any], opp: Opportunity, slot: Slot) -> int | None:
    """The creative a campaign would show on the slot, or None when it may not bid there."""
    user, pub = opp.user, opp.publisher
    if user.crawler:
        return None
    t = campaign.get("targeting") or {}
    if t.get("countries") and user.country not in t["countries"]:
        return None
    if t.get("os") and user.os not in t["os"]:
        return None
    if t.get("device_types") and user.device_type not in t["device_types"]:
        return None
    allowed_apps, allowed_sites = t.get("apps_allowed") or (), t.get("sites_allowed") or ()
    if allowed_apps or allowed_sites:
        allowed = allowed_apps if pub.kind == "app" else allowed_sites
        if pub.name not in allowed:
            return None
    if pub.kind == "site" and pub.name in (t.get("sites_blocked") or ()):
        return None
    if pub.kind == "app" and pub.name in (t.get("apps_blocked") or ()):
        return None
    if t.get("categories") and not set(t["categories"]) & _categories(pub.categories):
        return None
    if t.get("hours_of_week"):
        tz = str(campaign.get("timezone") or "UTC")
        if _hour_of_week(tz, opp.sim_ts) not in set(t["hours_of_week"]):
            return None
    personal = personalised(opp)
    if t.get("segments") and not (personal and set(t["segments"]) & set(user.segments)):
        return None
    if campaign.get("frequency_caps") and not personal:
        return None  # a capped campaign needs to know the user
    if t.get("deal_ids") and not {d.id for d in slot.deals} & set(t["deal_ids"]):
        return None
    return _creative(campaign, slot)


def _micros(value: Any) -> int:
    return round(float(value) * MICROS_PER_UNIT)


def least_budget(campaign: Mapping[str, Any]) -> int:
    """Three impressions at the maximum bid, in whole cents: a campaign the sampled supply
    hardly reaches stays able to bid (supply-limited, not dead)."""
    return max(10_000, -(-3 * _micros(campaign["max_bid_cpm"]) // 1000 // 10_000) * 10_000)


def expected_cost(
    market: Market, campaign: Mapping[str, Any], opp: Opportunity, slot: Slot, creative_id: int
) -> int:
    """What the campaign pays for the slot (USD micros per impression, 0 when it loses),
    bidding as a calibrated bidder would."""
    goal, price = campaign["goal_type"], _micros(campaign["goal_price"])
    if goal == "CPM":
        value = float(price)
    else:
        rate = market.p_click(opp, slot, int(campaign["id"]), creative_id)
        if goal != "CPC":
            rate *= market.p_install_given_click(opp, slot, int(campaign["id"]))
        value = price * rate * 1000
    share = SHADE if opp.auction_type == 1 else 1.0 - MARGIN
    bid = min(int(value * share), _micros(campaign["max_bid_cpm"]))
    out = clear(bid, slot.competing_usd_micros, slot.placement.floor_usd_micros, opp.auction_type)
    return out.clear_usd_micros // 1000 if out.won else 0


def hourly_supply(
    market: Market,
    campaigns: Sequence[Mapping[str, Any]],
    span: Span,
    samples: int,
    rng: random.Random,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Expected spend each campaign can buy in each simulated hour of the span (campaign x
    hour, USD micros), contested slots shared among the campaigns eligible for them."""
    hours = span.hours
    weights = np.array(
        [
            sum(market.intensity(span.start + h * SECONDS_PER_HOUR + m * 60.0) for m in range(60))
            * min(1.0, (span.seconds - h * SECONDS_PER_HOUR) / SECONDS_PER_HOUR)
            for h in range(hours)
        ]
    )
    requests_per_hour = span.requests * weights / weights.sum()
    per_hour = max(1, samples // hours)
    out = np.zeros((len(campaigns), hours))
    for h in range(hours):
        length = min(SECONDS_PER_HOUR, span.seconds - h * SECONDS_PER_HOUR)
        scale = requests_per_hour[h] / per_hour
        for _ in range(per_hour):
            opp = market.draw(rng, span.start + h * SECONDS_PER_HOUR + rng.random() * length)
            for slot in opp.slots:
                costs = []
                for i, c in enumerate(campaigns):
                    creative = eligible(c, opp, slot)
                    if creative is not None:
                        costs.append((i, expected_cost(market, c, opp, slot, creative)))
                for i, cost in costs:
                    out[i, h] += cost * scale / len(costs)
    return out


def _smoothed(row: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A three-hour moving average (sampling noise of narrow campaigns), ends kept."""
    if len(row) < 3:
        return row
    padded = np.concatenate([row[:1], row, row[-1:]])
    return np.convolve(padded, np.ones(3) / 3, mode="valid")


def size_budgets(
    document: dict[str, Any],
    market: Market,
    span: Span,
    *,
    samples: int = 6000,
    seed: int = 1,
    limited_every: int = 10,
) -> dict[str, Any]:
    """The portfolio ``document`` with each campaign's daily budget sized against its supply
    (see the module doc); the total budget keeps its ratio to the daily one. Every
    ``limited_every``-th campaign (the 4th, 14th, ...) is supply-limited on purpose."""
    campaigns = document["campaigns"]
    supply = hourly_supply(market, campaigns, span, samples, random.Random(f"{seed}:sizing"))
    unit = 1_000 * MICROS_PER_UNIT  # plans are linear in the budget: plan a unit, scale it
    for i, c in enumerate(campaigns):
        ratio = LIMITED if i % limited_every == 3 else ENOUGH
        have = _smoothed(supply[i])
        if c.get("pacing_mode") == "asap":
            # due at the start of each local day the span touches: each day's budget must
            # fit in that day's supply within the span
            tz = zone(str(c.get("timezone") or "UTC"))
            per_day: dict[int, float] = {}
            for h in range(span.hours):
                day = local_day(tz, span.start + h * SECONDS_PER_HOUR).toordinal()
                per_day[day] = per_day.get(day, 0.0) + float(supply[i, h])
            budget = min(per_day.values()) / ratio
        else:
            fits = []
            for h in range(span.hours):
                t0 = span.start + h * SECONDS_PER_HOUR
                share = planned_between(
                    unit,
                    t0,
                    min(t0 + SECONDS_PER_HOUR, span.end),
                    timezone=str(c.get("timezone") or "UTC"),
                    mode=str(c.get("pacing_mode") or "even"),
                    flight_start=c.get("flight_start"),
                    flight_end=c.get("flight_end"),
                    hours_of_week=(c.get("targeting") or {}).get("hours_of_week") or (),
                )
                if share > 0:
                    fits.append(have[h] * unit / (share * ratio))
            budget = min(fits) if fits else 0.0
        old_daily = _micros(c["daily_budget"]) or 1
        old_total = _micros(c.get("total_budget") or 0)
        daily = max(least_budget(c), int(budget) // 10_000 * 10_000)  # whole cents
        c["daily_budget"] = decimal_string(daily)
        if old_total:
            c["total_budget"] = decimal_string(old_total * daily // old_daily)
    return document
