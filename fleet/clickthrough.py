"""Click-through URLs: where the tracker's click redirect sends the device, with macros.

A creative's ``click_url`` is an absolute http(s) URL (a landing page, an app store page, or a
measurement partner's tracking link) that may hold these macros, each filled in URL-encoded:

    ${CLICK_ID}     the click id the tracker gave this click; a postback brings it back
    ${CAMPAIGN_ID}  the campaign id          ${CREATIVE_ID}  the creative id
    ${DEVICE_ID}    the user key (a keyed hash, never the raw device id), and only when the
                    request's privacy signals allowed one; empty otherwise

The redirect always carries the click id in its query string as ``clickid`` (added unless the
URL places it there itself, ``clickid=${CLICK_ID}``), the way measurement partners' links carry
it, so that a postback brings it back under that name whatever else the URL does with it.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote, urlsplit

CLICK_ID_PARAM: Final = "clickid"
MACROS: Final = ("CLICK_ID", "CAMPAIGN_ID", "CREATIVE_ID", "DEVICE_ID")
_MACRO: Final = re.compile(r"\$\{([A-Z_]+)\}")
MAX_LENGTH: Final = 2048


CLICK_URL_MACRO: Final = "${CLICK_URL}"


def clickable(markup: str) -> bool:
    """True when a creative's markup can be clicked through the tracker: it takes our click
    redirect (``${CLICK_URL}``), so the creative needs a click-through URL."""
    return CLICK_URL_MACRO in markup


def check(url: str) -> str | None:
    """Why ``url`` cannot be a click-through URL, or None when it can."""
    if len(url) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if any(c.isspace() for c in url) or not url.isprintable():
        return "must not contain spaces or control characters"
    unknown = sorted({m for m in _MACRO.findall(url) if m not in MACROS})
    if unknown:
        return f"unknown macro(s) {', '.join(unknown)}; known: {', '.join(MACROS)}"
    parts = urlsplit(_MACRO.sub("x", url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an absolute http(s) URL"
    return None


def expand(url: str, *, click_id: str, campaign_id: int, creative_id: int, device_id: str) -> str:
    """``url`` with its macros filled in (URL-encoded) and ``clickid`` in its query string."""
    values = {
        "CLICK_ID": click_id,
        "CAMPAIGN_ID": str(campaign_id),
        "CREATIVE_ID": str(creative_id),
        "DEVICE_ID": device_id,
    }
    filled = _MACRO.sub(lambda m: quote(values.get(m.group(1), ""), safe=""), url)
    base, hash_, fragment = filled.partition("#")
    query = base.partition("?")[2]
    if f"{CLICK_ID_PARAM}={quote(click_id, safe='')}" in query.split("&"):
        return filled
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return f"{base}{joiner}{CLICK_ID_PARAM}={quote(click_id, safe='')}{hash_}{fragment}"
