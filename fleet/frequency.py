"""Frequency-cap counters: the one key layout the tracker writes and the bidder reads.

One counter per (campaign, cap period, user) in memcached, an ASCII decimal:

    fc:<campaign id>:<period seconds>:<user key>

The writer (the tracker, on an impression) creates it with ``add`` (value 1) and an expiry that
ends the period ``period_seconds`` after that first impression, then ``incr``s it; the reader
(the bidder) ``get``s it: a missing key is a user not seen in the period (0). So a period is a
window that opens at the user's first impression of the campaign, not a calendar window.

User keys that memcached cannot hold as they are (longer than 128 characters, or with characters
outside ``[A-Za-z0-9._:@-]``) are replaced by ``h`` and 32 hex digits of their BLAKE2b hash; a
key is never longer than 250 bytes, memcached's limit.

Times are passed in: ``now`` is the fleet's time of day (the fleet clock, which may run faster
than the wall clock in a simulation); ``time_scale`` says how many fleet seconds pass per real
second, since memcached expires keys in real seconds.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Final

KEY_PREFIX: Final = "fc"
MAX_KEY_BYTES: Final = 250
_SAFE_USER: Final = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
# memcached reads an expiry of more than 30 days as an absolute Unix time
_MAX_RELATIVE_EXPIRY_S: Final = 30 * 86400


def counter_key(campaign_id: int, period_seconds: int, user_key: str) -> str:
    """The memcached key of one user's impression counter for one campaign and cap period."""
    user = user_key if _SAFE_USER.match(user_key) else "h" + _digest(user_key)
    return f"{KEY_PREFIX}:{campaign_id}:{period_seconds}:{user}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def period_end(first_impression: float, period_seconds: int) -> float:
    """When the period that a first impression at ``first_impression`` opened ends (the
    counter resets): the same clock as the argument."""
    if period_seconds <= 0:
        raise ValueError("a cap period is at least one second")
    return first_impression + period_seconds


def memcached_expiry(
    now: float, period_end_at: float, *, unix_now: float, time_scale: float = 1.0
) -> int:
    """The memcached expiry of a counter whose period ends at ``period_end_at``, written at
    ``now`` (both fleet time; ``time_scale`` fleet seconds pass per real second): relative real
    seconds, at least 1; past 30 days, which memcached would read as a Unix time, the absolute
    Unix time ``unix_now`` + that many seconds."""
    if time_scale <= 0:
        raise ValueError("time_scale must be greater than 0")
    real = max(1, math.ceil(max(period_end_at - now, 0.0) / time_scale))
    if real > _MAX_RELATIVE_EXPIRY_S:
        return math.ceil(unix_now) + real
    return real
