"""Money of a billing notice, pure: its cost in the campaign currency and the day it counts on.

The clearing price is a CPM in the bid currency; one impression costs a thousandth of it. It is
converted through ``fx_rates`` (units of a currency per 1 USD, scaled by 1e6) and rounded down
once, at the end, so that spend is never overstated. The store computes the same in SQL
(``tracker.store``); a test holds the two equal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from fleet import signing


def campaign_cost(
    price_cpm_micros: int, bid_per_usd_micros: int, campaign_per_usd_micros: int
) -> int:
    """Micros of the campaign currency that one impression at ``price_cpm_micros`` costs."""
    if bid_per_usd_micros <= 0 or campaign_per_usd_micros <= 0:
        raise ValueError("exchange rates must be positive")
    return (price_cpm_micros * campaign_per_usd_micros) // (bid_per_usd_micros * 1000)


def spend_day(now: float, timezone: str) -> date:
    """The campaign-timezone calendar day of ``now`` (seconds since the epoch)."""
    return datetime.fromtimestamp(now, UTC).astimezone(ZoneInfo(timezone)).date()


def win_markup(
    markup: str, signed: dict[str, str], signer: signing.Signer, base_url: str, price: str
) -> str:
    """nurl-only: the creative's markup as the win notice answers it, with its impression and
    click URLs rebuilt from the win's signed parameters (same bid, same expiry) and the
    clearing price filled in where the markup asks for ``${AUCTION_PRICE}``."""
    urls = signer.notice_urls(base_url, signed, ("imp", "click"))
    urls = {kind: url.replace("${AUCTION_PRICE}", price) for kind, url in urls.items()}
    rendered = signing.render_markup(markup, urls["imp"], urls["click"])
    return rendered.replace("${AUCTION_PRICE}", price)
