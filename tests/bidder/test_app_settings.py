"""BidderSettings: built from RTBFLEET_* variables, refused with one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bidder.settings import BidderSettings
from fleet.errors import SettingsError
from fleet.signing import DEV_SIGNING_KEY

KEY = "a-signing-key-of-24-bytes"


def load(**env: str) -> BidderSettings:
    return BidderSettings.from_env({"RTBFLEET_SIGNING_KEY": KEY, **env}, env_file=None)


def test_defaults_and_the_fleet_settings_it_composes() -> None:
    s = load(RTBFLEET_PG_DSN="postgresql://x@127.0.0.1:5/db", RTBFLEET_MEMCACHED="10.0.0.1:11211")
    assert (s.host, s.port, s.processes, s.process_count) == ("127.0.0.1", 8080, 1, 1)
    assert s.fleet.pg_dsn == "postgresql://x@127.0.0.1:5/db"
    assert s.fleet.memcached_servers == (("10.0.0.1", 11211),)
    assert s.fleet.signing_key_bytes == KEY.encode()


def test_zero_processes_means_one_per_core() -> None:
    import os

    assert load(RTBFLEET_BIDDER_PROCESSES="0").process_count == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RTBFLEET_SIGNING_KEY": ""}, "RTBFLEET_SIGNING_KEY"),
        ({"RTBFLEET_SIGNING_KEY": "short"}, "RTBFLEET_SIGNING_KEY"),
        ({"RTBFLEET_BIDDER_PORT": "70000"}, "RTBFLEET_BIDDER_PORT"),
        ({"RTBFLEET_BIDDER_PROCESSES": "-1"}, "RTBFLEET_BIDDER_PROCESSES"),
        ({"RTBFLEET_BIDDER_MARGIN": "1.5"}, "RTBFLEET_BIDDER_MARGIN"),
        ({"RTBFLEET_BIDDER_TMAX_CAP_MS": "50"}, "RTBFLEET_BIDDER_TMAX_CAP_MS"),
        ({"RTBFLEET_BIDDER_TMAX_DEFAULT_MS": "0"}, "RTBFLEET_BIDDER_TMAX_DEFAULT_MS"),
        ({"RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS": "250"}, "RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS"),
        ({"RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS": "-1"}, "RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS"),
        ({"RTBFLEET_BIDDER_CURRENCY": "usd"}, "RTBFLEET_BIDDER_CURRENCY"),
        (
            {"RTBFLEET_BIDDER_DATACENTER_CIDRS": "10.0.0.0/8,nonsense"},
            "RTBFLEET_BIDDER_DATACENTER_CIDRS",
        ),
        ({"RTBFLEET_TRACKER_URL": "tracker:8090"}, "RTBFLEET_TRACKER_URL"),
        ({"RTBFLEET_BIDDER_PORTFOLIO_FILE": "/nonexistent.json"}, "RTBFLEET_BIDDER_PORTFOLIO_FILE"),
        ({"RTBFLEET_BIDDER_SHED_WAIT_MS": "0"}, "RTBFLEET_BIDDER_SHED_WAIT_MS"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(**env)
    assert err.value.variable == variable


def test_the_development_key_only_when_asked_for() -> None:
    s = BidderSettings.from_env({"RTBFLEET_BIDDER_ALLOW_DEV_SIGNING_KEY": "1"}, env_file=None)
    assert s.fleet.signing_key_bytes == DEV_SIGNING_KEY.encode()


def test_datacenter_ranges_from_a_file_and_the_list(tmp_path: Path) -> None:
    path = tmp_path / "dc.txt"
    path.write_text("# cloud ranges\n192.0.2.0/24  # test net\n\n2001:db8::/32\n")
    s = load(
        RTBFLEET_BIDDER_DATACENTER_CIDRS="10.0.0.0/8",
        RTBFLEET_BIDDER_DATACENTER_CIDR_FILE=str(path),
    )
    assert s.all_datacenter_cidrs() == ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32")
    path.write_text("999.1.1.1/8\n")
    with pytest.raises(SettingsError) as err:
        load(RTBFLEET_BIDDER_DATACENTER_CIDR_FILE=str(path))
    assert err.value.variable == "RTBFLEET_BIDDER_DATACENTER_CIDR_FILE"


def test_pipeline_settings_carry_every_knob() -> None:
    s = load(
        RTBFLEET_BIDDER_ID="east",
        RTBFLEET_BIDDER_MARGIN="0.3",
        RTBFLEET_BIDDER_TMAX_DEFAULT_MS="90",
        RTBFLEET_BIDDER_NOBID_BODY="1",
        RTBFLEET_BIDDER_CRAWLER_PATTERNS="evilbot, scraper",
        RTBFLEET_BIDDER_BLOCKED_PUBLISHERS="pub-1,bad.example.com",
        RTBFLEET_TRACKER_URL="https://t.example.com",
    )
    p = s.to_pipeline_settings(index=3)
    assert p.bidder_id == "east-3"
    assert p.margin == 0.3 and p.tmax.default_ms == 90 and p.nobid_body is True
    assert p.crawler_ua_patterns == ("evilbot", "scraper")
    assert p.blocked_publishers == ("pub-1", "bad.example.com")
    assert p.tracker_base_url == "https://t.example.com"
    assert p.signing_key == KEY.encode()
    assert p.user_key_secret == KEY.encode()  # the tracker's too: the fleet's, read by both
    secret = load(RTBFLEET_USER_KEY_SECRET="a secret of its own").to_pipeline_settings()
    assert secret.user_key_secret == b"a secret of its own"
    assert load().to_pipeline_settings().crawler_ua_patterns  # the built-in list by default


def test_max_priced_per_imp_reaches_the_pipeline() -> None:
    from bidder.settings import BidderSettings

    env = {"RTBFLEET_SIGNING_KEY": "k" * 32, "RTBFLEET_BIDDER_MAX_PRICED_PER_IMP": "0"}
    settings = BidderSettings.from_env(environ=env, env_file=None)
    assert settings.to_pipeline_settings().max_priced_per_imp == 0
    default = BidderSettings.from_env(environ={"RTBFLEET_SIGNING_KEY": "k" * 32}, env_file=None)
    assert default.to_pipeline_settings().max_priced_per_imp == 64
