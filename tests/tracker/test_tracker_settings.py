"""The tracker's settings: one line naming the variable on a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.errors import SettingsError
from fleet.signing import DEV_SIGNING_KEY
from tracker.settings import TrackerSettings

KEY = "a signing key of enough bytes"


def load(**env: str) -> TrackerSettings:
    return TrackerSettings.from_env(environ=env, env_file=None)


def test_defaults_with_a_key() -> None:
    s = load(RTBFLEET_SIGNING_KEY=KEY, RTBFLEET_DATA_DIR="/srv/rtb")
    f = s.fleet  # the keys are the fleet's: the bidder signs with the same ones
    assert f.signing_key_bytes == KEY.encode() and f.previous_signing_key_bytes == ()
    assert f.user_key_secret_bytes == KEY.encode()  # until a user key secret of its own is set
    assert s.spool_path == Path("/srv/rtb/tracker-spool")
    assert (s.batch_max, s.cpa_factor, s.stream_attributed) == (500, 2.0, "rtbfleet-conversions")


def test_previous_keys_and_a_user_key_secret() -> None:
    s = load(
        RTBFLEET_SIGNING_KEY=KEY,
        RTBFLEET_SIGNING_KEYS_PREVIOUS="an older key of enough bytes, the oldest key of all bytes",
        RTBFLEET_USER_KEY_SECRET="another secret",
        RTBFLEET_TRACKER_SPOOL_DIR="/var/spool/t",
    )
    assert len(s.fleet.previous_signing_key_bytes) == 2
    assert s.fleet.user_key_secret_bytes == b"another secret"
    assert s.spool_path == Path("/var/spool/t")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "RTBFLEET_SIGNING_KEY"),
        ({"RTBFLEET_SIGNING_KEY": "short"}, "RTBFLEET_SIGNING_KEY"),
        ({"RTBFLEET_SIGNING_KEYS_PREVIOUS": "tiny"}, "RTBFLEET_SIGNING_KEYS_PREVIOUS"),
        ({"RTBFLEET_TRACKER_STREAM_ORGANIC": "rtbfleet-conversions"},
         "RTBFLEET_TRACKER_STREAM_ORGANIC"),
        ({"RTBFLEET_TRACKER_CPA_FACTOR": "0.5"}, "RTBFLEET_TRACKER_CPA_FACTOR"),
        ({"RTBFLEET_TRACKER_BATCH_MAX": "0"}, "RTBFLEET_TRACKER_BATCH_MAX"),
        ({"RTBFLEET_TRACKER_URL": "http://t.example/"}, "RTBFLEET_TRACKER_URL"),
        ({"RTBFLEET_TRACKER_PG_TIMEOUT_SECONDS": "soon"}, "RTBFLEET_TRACKER_PG_TIMEOUT_SECONDS"),
        ({"RTBFLEET_TRACKER_SPEND_LANES": "40000"}, "RTBFLEET_TRACKER_SPEND_LANES"),
        ({"RTBFLEET_TRACKER_SPEND_LANES": "2", "RTBFLEET_TRACKER_BATCH_CONCURRENCY": "3",
          "RTBFLEET_TRACKER_PG_POOL": "9"}, "RTBFLEET_TRACKER_BATCH_CONCURRENCY"),
        ({"RTBFLEET_TRACKER_BATCH_CONCURRENCY": "4", "RTBFLEET_TRACKER_PG_POOL": "4"},
         "RTBFLEET_TRACKER_PG_POOL"),
    ],
)  # fmt: skip
def test_bad_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    if variable != "RTBFLEET_SIGNING_KEY":
        env = {"RTBFLEET_SIGNING_KEY": KEY, **env}
    with pytest.raises(SettingsError) as info:
        load(**env)
    assert info.value.variable == variable


def test_the_development_key_only_when_asked() -> None:
    s = load(RTBFLEET_TRACKER_ALLOW_DEV_SIGNING_KEY="1")
    assert s.fleet.signing_key_bytes == DEV_SIGNING_KEY.encode()
