"""The frequency-counter key layout and period arithmetic of fleet.frequency."""

from __future__ import annotations

import pytest

from fleet.frequency import counter_key, memcached_expiry, period_end


def test_keys_are_the_documented_layout() -> None:
    assert counter_key(12, 86400, "i:6d92078a-8246") == "fc:12:86400:i:6d92078a-8246"
    assert counter_key(7, 3600, "u:exchange:abc") == "fc:7:3600:u:exchange:abc"


def test_user_keys_memcached_cannot_hold_are_hashed() -> None:
    hashed = counter_key(12, 86400, "u:ex:has space")
    assert hashed.startswith("fc:12:86400:h") and len(hashed) == len("fc:12:86400:h") + 32
    assert counter_key(1, 60, "x" * 500) != counter_key(1, 60, "x" * 501)
    assert counter_key(1, 60, "x" * 128) == "fc:1:60:" + "x" * 128  # the longest kept as is
    assert counter_key(1, 60, "x" * 129).startswith("fc:1:60:h")
    for user in ("a" * 1000, "é" * 300, "", "tab\there", "new\nline"):
        key = counter_key(1, 60, user)
        assert len(key.encode()) <= 250 and all(33 <= ord(c) < 127 for c in key)


def test_a_period_opens_at_the_first_impression() -> None:
    assert period_end(1_000.0, 3600) == 4_600.0
    with pytest.raises(ValueError):
        period_end(1_000.0, 0)


def test_expiry_in_real_seconds_follows_the_fleet_clock() -> None:
    # written at the first impression: the whole period
    assert memcached_expiry(1_000.0, period_end(1_000.0, 3600), unix_now=5e9) == 3600
    # a day at 576x is 150 real seconds; 1.5 real seconds rounds up, never to 0
    assert memcached_expiry(0.0, 86_400.0, unix_now=5e9, time_scale=576.0) == 150
    assert memcached_expiry(0.0, 864.0, unix_now=5e9, time_scale=576.0) == 2
    assert memcached_expiry(10.0, 5.0, unix_now=5e9) == 1  # past its end: expire at once
    # past 30 days memcached reads the number as a Unix time: it gets one
    ninety_days = 90 * 86400
    assert (
        memcached_expiry(0.0, ninety_days, unix_now=1_700_000_000.5) == 1_700_000_001 + ninety_days
    )
    with pytest.raises(ValueError):
        memcached_expiry(0.0, 60.0, unix_now=0.0, time_scale=0.0)
