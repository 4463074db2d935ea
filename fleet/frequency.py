"""The key layout of frequency-cap counters in memcached: one owner for writers and readers.

Whoever counts impressions (the tracker) creates a counter with ``add`` and a TTL of the cap
period, then ``incr``; the bidder reads them (``get_many``) to skip capped campaigns.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_USER = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


def frequency_key(campaign_id: int, period_seconds: int, user_key: str) -> str:
    """The memcached key of one user's impression counter for one campaign and cap period.

    The value is an ASCII decimal (memcached ``incr``); whoever counts impressions (the tracker)
    creates it with ``add`` and a TTL of the period. User keys that are long or carry characters
    memcached keys cannot hold are hashed (``h`` + 32 hex digits).
    """
    user = user_key if _SAFE_USER.match(user_key) else "h" + _digest(user_key)
    return f"fc:{campaign_id}:{period_seconds}:{user}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
