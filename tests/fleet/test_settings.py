from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.errors import SettingsError
from fleet.settings import FleetSettings, load, positive, read_env_file, setting


@dataclass(frozen=True)
class Example:
    name: str = setting("x", "RTBFLEET_NAME")
    count: int = setting(3, "RTBFLEET_COUNT", check=positive)
    ratio: float = setting(0.5, "RTBFLEET_RATIO")
    on: bool = setting(False, "RTBFLEET_ON")
    items: tuple[str, ...] = setting((), "RTBFLEET_ITEMS")
    path: Path = setting(Path("data"), "RTBFLEET_PATH")


def test_defaults_when_nothing_is_set() -> None:
    s = load(Example, environ={}, env_file=None)
    assert s == Example()


def test_values_are_converted_to_field_types() -> None:
    env = {
        "RTBFLEET_NAME": "bidder-1",
        "RTBFLEET_COUNT": "1_000",
        "RTBFLEET_RATIO": "0.25",
        "RTBFLEET_ON": "yes",
        "RTBFLEET_ITEMS": "a, b,,c",
        "RTBFLEET_PATH": "/srv/x",
    }
    s = load(Example, environ=env, env_file=None)
    assert (s.name, s.count, s.ratio, s.on, s.items) == (
        "bidder-1",
        1000,
        0.25,
        True,
        ("a", "b", "c"),
    )
    assert s.path == Path("/srv/x")


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("RTBFLEET_COUNT", "many", "not a valid int"),
        ("RTBFLEET_COUNT", "0", "must be greater than 0"),
        ("RTBFLEET_RATIO", "half", "not a valid float"),
        ("RTBFLEET_ON", "maybe", "not a valid bool"),
    ],
)
def test_bad_value_names_the_variable_and_reason(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(Example, environ={variable: value}, env_file=None)
    assert info.value.variable == variable
    assert fragment in str(info.value)
    assert str(info.value).startswith(variable)
    assert "\n" not in str(info.value)


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nRTBFLEET_NAME='from-file'\nexport RTBFLEET_COUNT=7\n\n")
    s = load(Example, environ={"RTBFLEET_COUNT": "9"}, env_file=env_file)
    assert s.name == "from-file"
    assert s.count == 9


def test_env_file_syntax_error_is_located(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RTBFLEET_NAME=a\nnot a pair\n")
    with pytest.raises(SettingsError, match=r"\.env:2"):
        read_env_file(env_file)


def test_fleet_settings_validate_endpoints_and_levels() -> None:
    with pytest.raises(SettingsError, match="RTBFLEET_EVENT_BUS_IN"):
        load(FleetSettings, environ={"RTBFLEET_EVENT_BUS_IN": "localhost:5550"}, env_file=None)
    with pytest.raises(SettingsError, match="RTBFLEET_LOG_LEVEL"):
        load(FleetSettings, environ={"RTBFLEET_LOG_LEVEL": "LOUD"}, env_file=None)
    s = load(
        FleetSettings, environ={"RTBFLEET_MEMCACHED": "10.0.0.1:11211,h2:11212"}, env_file=None
    )
    assert s.memcached_servers == (("10.0.0.1", 11211), ("h2", 11212))
