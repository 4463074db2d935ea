"""A bidder pipeline over the fixture portfolio with in-memory stand-ins for the service's
pacing gate, frequency counters and creative statistics, for tests that run the whole path."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bidder.creative import NoPerformance
from bidder.pipeline import Answer, Pipeline, PipelineSettings
from bidder.pricing import LogNormalMarket
from bidder.scoring import PriorModel
from fleet.config import Campaign, ConfigSnapshot

FIXTURES = Path(__file__).parent / "fixtures"
KEY = b"test-signing-key-0123456789abcdef"
NOON = datetime(2026, 11, 10, 12, 0, tzinfo=UTC).timestamp()
VENDOR = 42


def load_snapshot(name: str = "portfolio.json") -> ConfigSnapshot:
    return msgspec.convert(json.loads((FIXTURES / name).read_text()), ConfigSnapshot)


@dataclass
class Gate:
    denied: set[int] = field(default_factory=set)
    calls: list[tuple[int, int, float]] = field(default_factory=list)

    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        self.calls.append((campaign.id, price_cpm_micros, now))
        return campaign.id not in self.denied


@dataclass
class Frequency:
    counts: dict[int, int | None] = field(default_factory=dict)  # campaign -> seen (None: unknown)
    default: int | None = 0
    keys: list[str] = field(default_factory=list)
    bids: list[tuple[str, int, tuple[int, ...]]] = field(default_factory=list)  # bid() calls

    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        self.keys.append(user_key)
        return self.counts.get(campaign_id, self.default)

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        self.bids.append((user_key, campaign_id, tuple(periods)))


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    pipeline: Pipeline
    gate: Gate
    frequency: Frequency
    market: LogNormalMarket
    clock: FakeClock

    def handle(
        self, request: dict[str, Any] | bytes, *, spent_ms: float = 0.0, wallclock: float = NOON
    ) -> Answer:
        body = request if isinstance(request, bytes) else json.dumps(request).encode()
        arrival = self.clock.now - spent_ms / 1000.0
        return self.pipeline.handle(
            body, arrival=arrival, clock=self.clock, wallclock=wallclock, exchange="testx"
        )


def make_world(
    snapshot: ConfigSnapshot | None = None,
    *,
    seed: int = 1,
    model: Any = None,
    performance: Any = None,
    **overrides: Any,
) -> World:
    settings = replace(
        PipelineSettings(signing_key=KEY, vendor_id=VENDOR, seat="seat-7"), **overrides
    )
    gate, frequency, market = Gate(), Frequency(), LogNormalMarket()
    pipeline = Pipeline(
        settings,
        gate=gate,
        frequency=frequency,
        model=model or PriorModel(),
        market=market,
        performance=performance or NoPerformance(),
        rng=random.Random(seed),
    )
    pipeline.set_snapshot(snapshot or load_snapshot())
    return World(pipeline, gate, frequency, market, FakeClock())


def banner_request(
    w: int = 300, h: int = 250, *, floor: float = 0.1, country: str = "USA", **extra: Any
) -> dict[str, Any]:
    req: dict[str, Any] = {
        "id": "req-1",
        "at": 2,
        "tmax": 120,
        "imp": [{"id": "1", "banner": {"w": w, "h": h}, "bidfloor": floor, "secure": 1}],
        "site": {"id": "s1", "domain": "news.example.com", "publisher": {"id": "pub-1"}},
        "device": {
            "ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
            "ip": "81.2.69.160",
            "os": "Windows",
            "devicetype": 2,
            "geo": {"country": country},
        },
        "user": {"id": "user-1"},
    }
    req.update(extra)
    return req


Clock = Callable[[], float]
