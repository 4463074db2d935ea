"""CacheSettings from RTBFLEET_* variables, and Namespace validation."""

from __future__ import annotations

from typing import Any

import pytest

from cache.namespace import Loaded, Namespace
from cache.settings import CacheSettings
from fleet.errors import SettingsError


def test_defaults_and_environment() -> None:
    s = CacheSettings.from_env({}, env_file=None)
    assert s.l1_max_entries == 100_000 and s.lease_seconds == 5
    assert s.fleet.memcached_servers == (("127.0.0.1", 11211),)
    s = CacheSettings.from_env(
        {
            "RTBFLEET_CACHE_L1_MAX_ENTRIES": "5_000",
            "RTBFLEET_CACHE_TTL_SECONDS": "2.5",
            "RTBFLEET_CACHE_MAX_STALE_SECONDS": "0",
            "RTBFLEET_CACHE_LEASE_SECONDS": "3",
            "RTBFLEET_CACHE_L2_POOL_SIZE": "8",
            "RTBFLEET_CACHE_BUS": "off",
            "RTBFLEET_MEMCACHED": "10.0.0.1:11211,10.0.0.2:11212",
        },
        env_file=None,
    )
    assert (s.l1_max_entries, s.default_ttl, s.max_stale) == (5000, 2.5, 0.0)
    assert (s.lease_seconds, s.l2_pool_size, s.bus) == (3, 8, False)
    assert s.fleet.memcached_servers == (("10.0.0.1", 11211), ("10.0.0.2", 11212))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RTBFLEET_CACHE_L1_MAX_ENTRIES", "0"),
        ("RTBFLEET_CACHE_TTL_SECONDS", "-1"),
        ("RTBFLEET_CACHE_MAX_STALE_SECONDS", "-1"),
        ("RTBFLEET_CACHE_LEASE_SECONDS", "soon"),
        ("RTBFLEET_CACHE_L2_PREFIX", "has space"),
        ("RTBFLEET_CACHE_TICK_SECONDS", "100"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        CacheSettings.from_env({variable: value}, env_file=None)
    assert info.value.variable == variable


async def _load(key: str) -> Loaded[int]:
    return Loaded(1, 1)


def test_namespace_validation() -> None:
    ns = Namespace("campaign", _load, type=int, hot=("1", "2"))
    assert ns.versioning == "source" and ns.hot == ("1", "2")
    bad: list[dict[str, Any]] = [
        {"name": "Bad Name", "loader": _load},
        {"name": "x", "loader": None},
        {"name": "x", "loader": _load, "ttl": 0},
        {"name": "x", "loader": _load, "max_stale": -1},
        {"name": "x", "loader": _load, "versioning": "wall"},
        {"name": "x", "counter": True, "versioning": "clock"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            Namespace(**kwargs)
    with pytest.raises(TypeError):
        Namespace("x", _load, hot="snapshot")  # type: ignore[arg-type]
    assert Namespace("freq", None, counter=True).counter
