"""Every setting is reachable from the environment, and the pipeline's knobs are all settings.

- Every settings class in every package (found by reading the source for ``setting(``, so a new
  service's class is walked without being named here) has, for each field, an ``RTBFLEET_*``
  variable with a help text, or is a nested settings class; setting the variable to another
  valid value changes what ``fleet.settings.load`` builds.
- Every ``PipelineSettings`` field is built from a variable by
  ``BidderSettings.to_pipeline_settings``: a field without one fails here (a deal seat that no
  setting could reach did once).
- A bidder configured through its environment alone bids on a deal that lists its seat.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
import re
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bidder.creative import NoPerformance
from bidder.options import PipelineSettings, TmaxBounds
from bidder.pipeline import Pipeline
from bidder.pricing import LogNormalMarket
from bidder.scoring import PriorModel
from bidder.settings import BidderSettings
from fleet.config import ConfigSnapshot
from fleet.errors import SettingsError
from fleet.settings import PREFIX, load

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("fleet", "bidder", "cache", "pacing", "bidlogger", "tracker", "learner", "sim")
KEY = "k" * 32
# What every class is loaded with, so that its validate() passes (a signing key is required).
BASE = {"RTBFLEET_SIGNING_KEY": KEY}


def settings_classes() -> list[type[Any]]:
    found: dict[str, type[Any]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            if "setting(" not in path.read_text(encoding="utf-8"):
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            module = importlib.import_module(name.removesuffix(".__init__"))
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and dataclasses.is_dataclass(obj)
                    and obj.__module__ == module.__name__
                    and any("env" in f.metadata for f in dataclasses.fields(obj))
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = settings_classes()


def _nested(cls: type[Any], f: dataclasses.Field[Any]) -> bool:
    kind = typing.get_type_hints(cls)[f.name]
    return isinstance(kind, type) and kind in CLASSES


def test_the_settings_classes_are_found() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"FleetSettings", "BidderSettings", "CacheSettings", "SimSettings"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_its_variable(cls: type[Any]) -> None:
    seen: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if _nested(cls, f):
            continue
        variable = f.metadata.get("env")
        assert variable, f"{cls.__name__}.{f.name} has no RTBFLEET_ variable"
        assert variable.startswith(PREFIX) and variable == variable.upper(), variable
        assert f.metadata.get("help"), f"{variable} has no help text"
        assert variable not in seen, f"{variable} read by both {seen[variable]} and {f.name}"
        seen[variable] = f.name


def _candidates(value: Any, help_text: str) -> list[str]:
    """Other values a variable could take, as text: the first one that loads is used. The words
    of a setting's help text come last (a choice such as "multiplicative or pi" names them)."""
    return [
        *_generic_candidates(value),
        *re.findall(r"[a-z][a-z0-9_]*(?:://[^\s,\[\]]+)?", help_text),
    ]


def _generic_candidates(value: Any) -> list[str]:
    if isinstance(value, bool):
        return ["0" if value else "1"]
    if isinstance(value, int):
        return [
            str(value + 1),
            str(value * 2 + 1),
            str(max(value - 1, 0)),
            "1",
            str(value + 10_000),
        ]
    if isinstance(value, float):
        return [
            repr(value + 1.0),
            repr(value / 2),
            repr(value * 2 + 0.5),
            "0.5",
            repr(value * 0.99),
        ]
    if isinstance(value, tuple):
        fewer = [",".join(value[:-1])] if len(value) > 1 else []
        return [*fewer, "10.0.0.0/8,192.0.2.0/24", "a,b", "x" * 32]
    text = str(value)
    return [
        text + "0",
        text.split(";")[0],  # a list-valued text (an estimator grid) with one entry less
        text + "/x",
        "x" * 32,
        "DEBUG",
        "EUR",
        "tcp://127.0.0.1:6000",
        "127.0.0.1:11311",
        "http://127.0.0.1:9000",
        "2026-06-02T00:00:00+00:00",
    ]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_variable_reaches_its_field(cls: type[Any], tmp_path: Path) -> None:
    baseline = load(cls, BASE, env_file=None)
    for f in dataclasses.fields(cls):
        if _nested(cls, f):
            continue
        variable = f.metadata["env"]
        before = getattr(baseline, f.name)
        for raw in _candidates(before, f.metadata.get("help", "")):
            if isinstance(before, Path) or f.name.endswith("_file"):
                target = tmp_path / f"{f.name}.txt"
                target.write_text("192.0.2.0/24\n" if "cidr" in f.name else "{}")
                raw = str(target)
            try:
                after = getattr(load(cls, {**BASE, variable: raw}, env_file=None), f.name)
            except SettingsError:
                continue
            if after != before:
                break
        else:
            pytest.fail(f"{cls.__name__}.{f.name}: no value of {variable} changed it")


# -- the pipeline's knobs ------------------------------------------------------------------------

# Each PipelineSettings field: the variables that set it, and what it then is.
PIPELINE: dict[str, tuple[dict[str, str], Any]] = {
    "bidder_id": ({"RTBFLEET_BIDDER_ID": "bx"}, "bx-0"),
    "seat": ({"RTBFLEET_BIDDER_SEAT": "seat-9"}, "seat-9"),
    "currency": ({"RTBFLEET_BIDDER_CURRENCY": "EUR"}, "EUR"),
    "tmax": (
        {
            "RTBFLEET_BIDDER_TMAX_DEFAULT_MS": "90",
            "RTBFLEET_BIDDER_TMAX_CAP_MS": "200",
            "RTBFLEET_BIDDER_NETWORK_ALLOWANCE_MS": "10",
        },
        TmaxBounds(90, 200, 10),
    ),
    "margin": ({"RTBFLEET_BIDDER_MARGIN": "0.3"}, 0.3),
    "min_bid_cpm_micros": ({"RTBFLEET_BIDDER_MIN_BID_CPM_MICROS": "20000"}, 20_000),
    "vendor_id": ({"RTBFLEET_BIDDER_VENDOR_ID": "42"}, 42),
    "crawler_ua_patterns": ({"RTBFLEET_BIDDER_CRAWLER_PATTERNS": "bot,spider"}, ("bot", "spider")),
    "datacenter_cidrs": ({"RTBFLEET_BIDDER_DATACENTER_CIDRS": "192.0.2.0/24"}, ("192.0.2.0/24",)),
    "blocked_publishers": ({"RTBFLEET_BIDDER_BLOCKED_PUBLISHERS": "p1,a.com"}, ("p1", "a.com")),
    "reject_incomplete_schain": ({"RTBFLEET_BIDDER_REJECT_INCOMPLETE_SCHAIN": "1"}, True),
    "tracker_base_url": ({"RTBFLEET_TRACKER_URL": "https://t.example"}, "https://t.example"),
    "signing_key": ({"RTBFLEET_SIGNING_KEY": "s" * 20}, b"s" * 20),
    "user_key_secret": ({"RTBFLEET_USER_KEY_SECRET": "u" * 20}, b"u" * 20),
    "notice_ttl_s": ({"RTBFLEET_BIDDER_NOTICE_TTL": "600"}, 600),
    "nobid_body": ({"RTBFLEET_BIDDER_NOBID_BODY": "1"}, True),
    "use_nurl": ({"RTBFLEET_BIDDER_USE_NURL": "1"}, True),
    "max_priced_per_imp": ({"RTBFLEET_BIDDER_MAX_PRICED_PER_IMP": "4"}, 4),
    "early_stop": ({"RTBFLEET_BIDDER_EARLY_STOP": "0"}, False),
}


def test_every_pipeline_knob_has_a_row() -> None:
    assert set(PIPELINE) == {f.name for f in dataclasses.fields(PipelineSettings)}


@pytest.mark.parametrize("name", sorted(PIPELINE))
def test_every_pipeline_knob_is_set_from_the_environment(name: str) -> None:
    variables, expected = PIPELINE[name]
    default = BidderSettings.from_env(BASE, env_file=None).to_pipeline_settings()
    configured = BidderSettings.from_env({**BASE, **variables}, env_file=None)
    value = getattr(configured.to_pipeline_settings(), name)
    assert value == expected and value != getattr(default, name)


def _deal_request(seat: str) -> bytes:
    return json.dumps(
        {
            "id": "req-1",
            "at": 2,
            "tmax": 120,
            "imp": [
                {
                    "id": "1",
                    "banner": {"w": 300, "h": 250},
                    "bidfloor": 0.1,
                    "pmp": {
                        "private_auction": 1,
                        "deals": [{"id": "deal-001", "wseat": [seat]}],
                    },
                }
            ],
            "site": {"id": "s1", "domain": "news.example.com", "publisher": {"id": "pub-1"}},
            "device": {
                "ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
                "ip": "81.2.69.160",
                "os": "Windows",
                "devicetype": 2,
                "geo": {"country": "USA"},
            },
            "user": {"id": "user-1"},
        }
    ).encode()


def _pipeline(environ: dict[str, str]) -> Pipeline:
    settings = BidderSettings.from_env(environ, env_file=None).to_pipeline_settings()
    pipeline = Pipeline(
        settings,
        gate=_AllowAll(),
        frequency=_NeverSeen(),
        model=PriorModel(),
        market=LogNormalMarket(),
        performance=NoPerformance(),
        rng=random.Random(1),
    )
    pipeline.set_snapshot(load_snapshot())
    return pipeline


class _AllowAll:
    def allow(
        self, campaign: object, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        return True


class _NeverSeen:
    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        return 0

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        return None


NOON = datetime(2026, 11, 10, 12, tzinfo=UTC).timestamp()  # inside the fixture's flights
FIXTURE = REPO / "tests" / "bidder" / "fixtures" / "portfolio.json"


def load_snapshot() -> ConfigSnapshot:
    return msgspec.convert(json.loads(FIXTURE.read_text()), ConfigSnapshot)


def test_a_bidder_configured_only_through_the_environment_bids_on_its_seats_deal() -> None:
    pipeline = _pipeline({**BASE, "RTBFLEET_BIDDER_SEAT": "seat-7"})
    answer = pipeline.handle(
        _deal_request("seat-7"), arrival=0.0, clock=lambda: 0.0, wallclock=NOON
    )
    assert answer.status == 200, answer.reason
    (bid,) = json.loads(answer.body)["seatbid"][0]["bid"]
    assert bid["dealid"] == "deal-001"
    assert json.loads(answer.body)["seatbid"][0]["seat"] == "seat-7"
    other = pipeline.handle(_deal_request("other"), arrival=0.0, clock=lambda: 0.0, wallclock=NOON)
    assert other.status == 204  # a private deal for another seat: nothing to bid on


def test_without_the_seat_variable_the_same_deal_gets_no_bid() -> None:
    pipeline = _pipeline(BASE)
    answer = pipeline.handle(
        _deal_request("seat-7"), arrival=0.0, clock=lambda: 0.0, wallclock=NOON
    )
    assert answer.status == 204
