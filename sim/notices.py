"""What happens after an auction, with no I/O: which URLs a creative fires, whether and when the
ad renders, is clicked, installs and converts (drawn from the TRUE probabilities), and the
measurement partner's postback URL. Delays are in simulated seconds.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import random
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

PARTNER = "simmmp"  # the simulated measurement partner (MMP)


@dataclasses.dataclass(frozen=True, slots=True)
class Trackers:
    impressions: tuple[str, ...]  # pixels fired when the ad renders
    clicks: tuple[str, ...]  # the click URL first, then click trackers


@dataclasses.dataclass(frozen=True)
class FollowupParams:
    render_share: float = 0.95  # wins whose ad renders (and is billed)
    render_median_s: float = 1.0
    click_median_s: float = 8.0
    install_median_s: float = 1500.0
    registration_share: float = 0.45
    registration_median_s: float = 600.0
    purchase_share: float = 0.06
    purchase_median_s: float = 10_800.0
    purchase_median_revenue: float = 4.99
    duplicate_billing_share: float = 0.003  # exchanges sometimes send a billing notice twice
    duplicate_delay_median_s: float = 60.0
    sigma: float = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class InAppEvent:
    name: str
    delay_s: float  # after the install
    revenue_micros: int


@dataclasses.dataclass(frozen=True, slots=True)
class Followups:
    """The fate of one won impression (None: it does not happen)."""

    render_s: float | None  # after the auction
    duplicate_billing_s: float | None  # after the render
    click_s: float | None  # after the render
    install_s: float | None  # after the click
    events: tuple[InAppEvent, ...]


def _delay(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def draw_followups(
    rng: random.Random, p_click: float, p_install: float, params: FollowupParams
) -> Followups:
    """Draw whether the ad renders, is clicked, installs and converts, and when."""
    if rng.random() >= params.render_share:
        return Followups(None, None, None, None, ())
    render = _delay(rng, params.render_median_s, params.sigma)
    duplicate = None
    if rng.random() < params.duplicate_billing_share:
        duplicate = _delay(rng, params.duplicate_delay_median_s, params.sigma)
    if rng.random() >= p_click:
        return Followups(render, duplicate, None, None, ())
    click = _delay(rng, params.click_median_s, params.sigma)
    if rng.random() >= p_install:
        return Followups(render, duplicate, click, None, ())
    install = _delay(rng, params.install_median_s, params.sigma)
    events = []
    if rng.random() < params.registration_share:
        events.append(
            InAppEvent("registration", _delay(rng, params.registration_median_s, params.sigma), 0)
        )
    if rng.random() < params.purchase_share:
        revenue = params.purchase_median_revenue * math.exp(rng.gauss(0.0, 0.8))
        events.append(
            InAppEvent(
                "purchase",
                _delay(rng, params.purchase_median_s, params.sigma),
                round(revenue * 1_000_000),
            )
        )
    return Followups(render, duplicate, click, install, tuple(events))


_IMG = re.compile(r"<img\b([^>]*)>", re.IGNORECASE)
_ANCHOR = re.compile(r"<a\b[^>]*?\bhref\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_SRC = re.compile(r"\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_ONE_PIXEL = re.compile(r"\b(width|height)\s*=\s*[\"']?1[\"'\s/>]", re.IGNORECASE)
_PIXEL_PATH = re.compile(r"/(imp|impression|pixel|px|track|view)", re.IGNORECASE)
_VAST_TAG = r"<{0}\b[^>]*>\s*(?:<!\[CDATA\[)?\s*(.*?)\s*(?:\]\]>)?\s*</{0}>"
_VAST = {
    name: re.compile(_VAST_TAG.format(name), re.IGNORECASE | re.DOTALL)
    for name in ("Impression", "ClickThrough", "ClickTracking")
}


def extract_trackers(adm: str) -> Trackers:
    """Impression pixels and click URLs from banner HTML, a VAST document or native JSON."""
    text = adm.strip()
    if not text:
        return Trackers((), ())
    if text.startswith("{"):
        return _native(text)
    head = text[:300].lower()
    if "<vast" in head or head.startswith("<?xml"):
        return Trackers(
            tuple(m.strip() for m in _VAST["Impression"].findall(text) if m.strip()),
            tuple(
                m.strip()
                for name in ("ClickThrough", "ClickTracking")
                for m in _VAST[name].findall(text)
                if m.strip()
            ),
        )
    impressions = []
    for attributes in _IMG.findall(text):
        src = _SRC.search(attributes)
        if src is None:
            continue
        url = html.unescape(src.group(1))
        if _ONE_PIXEL.search(attributes) or _PIXEL_PATH.search(urlsplit(url).path):
            impressions.append(url)
    clicks = tuple(html.unescape(href) for href in _ANCHOR.findall(text))
    return Trackers(tuple(impressions), clicks[:1])


def _native(text: str) -> Trackers:
    try:
        doc = json.loads(text)
    except ValueError:
        return Trackers((), ())
    if not isinstance(doc, dict):
        return Trackers((), ())
    native = doc.get("native", doc)
    if not isinstance(native, dict):
        return Trackers((), ())
    impressions = [u for u in native.get("imptrackers") or () if isinstance(u, str)]
    for tracker in native.get("eventtrackers") or ():
        if (
            isinstance(tracker, dict)
            and tracker.get("event") == 1
            and tracker.get("method") == 1
            and isinstance(tracker.get("url"), str)
        ):
            impressions.append(tracker["url"])
    link = native.get("link") or {}
    clicks = []
    if isinstance(link, dict):
        if isinstance(link.get("url"), str):
            clicks.append(link["url"])
        clicks += [u for u in link.get("clicktrackers") or () if isinstance(u, str)]
    return Trackers(tuple(impressions), tuple(clicks))


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL ("" when it has none)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def postback_url(
    tracker: str,
    *,
    event: str,
    click_url: str,
    redirect: str,
    ifa: str,
    event_ts: float,
    revenue_micros: int = 0,
    currency: str = "USD",
    app: str = "",
) -> str:
    """The measurement partner's postback: ``<tracker>/postback?...``.

    The partner echoes the parameters of the link the click redirected to (its tracking link,
    where the tracker put its click id) or, without a redirect, those of the click URL itself;
    then adds ``partner``, ``event`` (``install`` or an in-app event name), ``ifa``,
    ``event_ts`` (simulated, seconds), ``app`` (the advertised app) when known, and
    ``revenue_micros`` with ``currency`` for revenue.
    """
    source = redirect if redirect and "?" in redirect else click_url
    params = dict(parse_qsl(urlsplit(source).query, keep_blank_values=True))
    params.update({"partner": PARTNER, "event": event, "event_ts": f"{event_ts:.3f}"})
    if ifa:
        params["ifa"] = ifa
    if app:
        params["app"] = app
    if revenue_micros:
        params["revenue_micros"] = str(revenue_micros)
        params["currency"] = currency
    return f"{tracker.rstrip('/')}/postback?{urlencode(params)}"
