"""How long ``Pipeline.handle`` takes per banner request, by portfolio size (campaigns of 5
creatives; 200 by default).

    .venv/bin/python tests/bidder/perf_pipeline.py [requests] [campaigns,campaigns,...] [priors]
    .venv/bin/python tests/bidder/perf_pipeline.py memory [campaigns]
    .venv/bin/python tests/bidder/perf_pipeline.py gc [campaigns] [requests]
    .venv/bin/python tests/bidder/perf_pipeline.py change [campaigns] [times]
    .venv/bin/python tests/bidder/perf_pipeline.py mix [campaigns,...] [requests] [profile]

``priors`` scores with the prior model the bidder uses until a learnt model arrives instead
of a hashed linear model. The second form prints what each part of a compiled snapshot adds to
the resident memory of a fresh process: the snapshot itself, the targeting index, the scorer's
tables, a bid path warmed by requests and a one-campaign change. The third times the
collector's full passes (``gc.callbacks``) over ``requests`` distinct requests (3,000), twice
over, as the process leaves the collector and then with the snapshot frozen as the server does
after each install (``bidder.collector.LongLived``). The fourth times a one-campaign change
of a portfolio file reread (``bidder.sources.PortfolioFile``, and a read without the last
read's objects) applied with ``Pipeline.set_snapshot``, the span
``bidder_config_apply_seconds`` measures in the service.
The fifth runs what the bench's bidder process runs per request, in process: the bench's request
mix (``bench.bidder.request_mix``: banner, video and native, 3,000 distinct requests by default,
so the memos miss as in the service), its portfolio (seed 5) and a 2x2^20-weight model,
``Pipeline.handle`` and then encoding each event the answer publishes; ``profile`` prints the
functions that took the most time (cProfile, by own time) at each size.

Requests are drawn from the synthetic market's vocabulary (countries, OS, devices, apps and
sites, banner sizes) like the simulator's traffic; the worst case is the most crowded request
(USA, iOS, 300x250 in a listed app). Printed with a baseline measured in the same run (decoding
the request and encoding a response with msgspec) because absolute times on a shared machine
mean little.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np

from bidder.creative import NoPerformance
from bidder.openrtb import BidRequest, BidResponse
from bidder.pipeline import Pipeline, PipelineSettings
from bidder.pricing import LogNormalMarket
from bidder.scoring import HashedLinearModel, PriorModel
from fleet import portfolio
from fleet.config import Campaign, ConfigSnapshot
from sim import portfolio as synthetic
from sim import vocabulary as vocab

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


class AllowAll:
    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        return True


class NoneSeen:
    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        return 0

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        return None


def make_pipeline(
    campaigns: int = 200, *, priors: bool = False, snapshot: ConfigSnapshot | None = None
) -> Pipeline:
    if snapshot is None:
        doc = synthetic.generate(campaigns, seed=3, creatives_per_campaign=5, now=NOW)
        pf = portfolio.validate(doc)
        snapshot = ConfigSnapshot(
            advertisers=pf.advertisers,
            campaigns=pf.campaigns,
            version=1,
            fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
        )
    rng = random.Random(1)
    weights = [rng.gauss(0, 0.05) for _ in range(1 << 16)]
    w = np.asarray(weights, dtype=np.float32)
    model = HashedLinearModel(w, w[::-1].copy(), -4.5, -3.5, bits=16, version=1)
    pipeline = Pipeline(
        PipelineSettings(signing_key=b"perf-signing-key-0123456789abcdef"),
        gate=AllowAll(),
        frequency=NoneSeen(),
        model=model,
        market=LogNormalMarket(),
        performance=NoPerformance(),
        rng=rng,
    )
    if priors:
        pipeline.set_model(PriorModel(click=0.02, install=0.05, version=3))
    pipeline.set_snapshot(snapshot)
    return pipeline


def _pick(rng: random.Random, table: dict[Any, float]) -> Any:
    return rng.choices(list(table), weights=list(table.values()))[0]


def typical_request(rng: random.Random, n: int, at: int) -> dict[str, Any]:
    size = rng.choice(vocab.BANNER_SIZES)
    w, h = (int(x) for x in size.split("x"))
    req: dict[str, Any] = {
        "id": f"r{n}",
        "at": at,
        "tmax": 120,
        "imp": [{"id": "1", "banner": {"w": w, "h": h}, "bidfloor": 0.3, "secure": 1}],
        "device": {
            "ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
            "ip": "81.2.69.160",
            "os": _pick(rng, vocab.OPERATING_SYSTEMS),
            "devicetype": _pick(rng, vocab.DEVICE_TYPES),
            "connectiontype": _pick(rng, vocab.CONNECTION_TYPES),
            "ifa": f"6d92078a-8246-4ba4-ae5b-{n:012d}",
            "geo": {"country": _pick(rng, vocab.COUNTRIES)},
        },
        "user": {"id": f"u{n}"},
    }
    if rng.random() < 0.6:
        req["app"] = {"bundle": rng.choice(vocab.APP_BUNDLES), "publisher": {"id": "p1"}}
    else:
        req["site"] = {"domain": rng.choice(vocab.SITE_DOMAINS), "publisher": {"id": "p2"}}
    return req


def crowded_request(at: int) -> dict[str, Any]:
    req = typical_request(random.Random(0), 0, at)
    req["imp"][0]["banner"] = {"w": 300, "h": 250}
    req["device"].update(os="ios", devicetype=4, geo={"country": "USA"})
    req.pop("site", None)
    req["app"] = {"bundle": "com.example.puzzlequest", "publisher": {"id": "p1"}}
    return req


def baseline(bodies: list[bytes]) -> float:
    """msgspec decode of each request and encode of a one-bid response: the floor of any bidder."""
    resp = msgspec.json.encode(BidResponse(id="x", seatbid=[], cur="USD"))
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for body in bodies:
            msgspec.json.decode(body, type=BidRequest)
            msgspec.json.decode(resp, type=BidResponse)
            msgspec.json.encode(BidResponse(id="x", cur="USD"))
        best = min(best, (time.process_time() - start) / len(bodies) * 1e6)
    return best


def measure(pipeline: Pipeline, bodies: list[bytes]) -> tuple[float, float, float]:
    """(µs per request, share answered with a bid, mean candidates), best of five passes, in
    CPU time of this process (the machine is shared)."""
    best = float("inf")
    bids = candidates = 0
    for _ in range(5):
        bids = candidates = 0
        start = time.process_time()
        for body in bodies:
            t = time.monotonic()
            answer = pipeline.handle(
                body, arrival=t, clock=time.monotonic, wallclock=NOW.timestamp()
            )
            bids += answer.outcome == "bid"
            candidates += answer.candidates
        best = min(best, (time.process_time() - start) / len(bodies) * 1e6)
    return best, bids / len(bodies), candidates / len(bodies)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(campaigns: int) -> None:
    """Resident memory added by each part, measured in this process (RSS deltas)."""
    import gc

    from msgspec.structs import replace

    from bidder.scorer import PositionScorer

    gc.collect()
    base = _rss_mib()
    pf = portfolio.validate(
        synthetic.generate(campaigns, seed=3, creatives_per_campaign=5, now=NOW)
    )
    snapshot = ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=pf.campaigns,
        version=1,
        fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
    )
    del pf
    gc.collect()
    parts = [("config snapshot (campaigns, creatives)", _rss_mib())]
    pipeline = make_pipeline(0)  # the model, no portfolio yet
    parts.append(("model 2x2^16 weights and an empty pipeline", _rss_mib()))
    pipeline.set_snapshot(snapshot)
    gc.collect()
    parts.append(("targeting index + scorer tables + per-position arrays", _rss_mib()))
    compiled = pipeline._compiled
    assert compiled is not None
    tables = compiled.tables.nbytes if compiled.tables is not None else 0
    scorer: PositionScorer | None = compiled.scorer
    sums = scorer.nbytes if scorer is not None else 0
    arrays = compiled.goal_codes.nbytes + compiled.goal_prices.nbytes
    rng = random.Random(7)
    bodies = [json.dumps(typical_request(rng, i, 2)).encode() for i in range(300)]
    for body in bodies:
        pipeline.handle(
            body, arrival=time.monotonic(), clock=time.monotonic, wallclock=NOW.timestamp()
        )
    gc.collect()
    parts.append(("300 requests served (the index's memos)", _rss_mib()))
    cs = list(snapshot.campaigns)
    cs[1] = replace(cs[1], max_bid_cpm_micros=cs[1].max_bid_cpm_micros + 1, version=9)
    start = time.perf_counter()
    incremental = pipeline.set_snapshot(replace(snapshot, campaigns=tuple(cs), version=2))
    took = (time.perf_counter() - start) * 1000
    gc.collect()
    parts.append(
        (
            f"a one-campaign change ({'incremental' if incremental else 'full'}, {took:.0f} ms)",
            _rss_mib(),
        )
    )
    print(f"{campaigns:,} campaigns, {campaigns * 5:,} creatives; process before: {base:.0f} MiB")
    last = base
    for name, rss in parts:
        print(f"  {name}: +{rss - last:.0f} MiB (resident {rss:.0f} MiB)")
        last = rss
    print(
        f"  of which exact sizes: scorer tables {tables / 2**20:.1f} MiB, static sums "
        f"{sums / 2**20:.1f} MiB, per-position goal arrays {arrays / 2**20:.1f} MiB"
    )


def bench_mix(sizes: list[int], n: int, profile: bool) -> None:
    """The bench's per-request work in process (``mix`` in the docstring)."""
    import cProfile
    import pstats
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the bench package
    from bench.bidder import request_mix
    from fleet.events import encode

    bodies = [body for body, _ in request_mix(n)]
    rng = np.random.default_rng(3)
    size = 1 << 20
    click = (rng.standard_normal(size) * 0.05).astype(np.float32)
    install = (rng.standard_normal(size) * 0.05).astype(np.float32)
    model = HashedLinearModel(click, install, -4.6, -3.5, bits=20, version=1)
    model = HashedLinearModel.from_bytes(model.to_bytes())  # as the bidder loads it
    for campaigns in sizes:
        pf = portfolio.validate(synthetic.generate(campaigns, seed=5, creatives_per_campaign=5))
        snapshot = ConfigSnapshot(
            advertisers=pf.advertisers,
            campaigns=pf.campaigns,
            version=1,
            fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
        )
        pipeline = make_pipeline(campaigns, snapshot=snapshot)
        pipeline.set_model(model)
        now = time.time()

        def one_pass(pipeline: Pipeline = pipeline, now: float = now) -> tuple[float, int, int]:
            bids = candidates = 0
            start = time.process_time()
            for body in bodies:
                t = time.monotonic()
                answer = pipeline.handle(body, arrival=t, clock=time.monotonic, wallclock=now)
                for event in answer.events:
                    encode(event)
                bids += answer.outcome == "bid"
                candidates += answer.candidates
            return (time.process_time() - start) / len(bodies) * 1e6, bids, candidates

        one_pass()  # warm
        best = min(one_pass() for _ in range(3))
        print(
            f"{campaigns:,} campaigns, bench mix of {n:,} requests: {best[0]:.0f} us/request "
            f"(best of 3), {best[1] / n:.0%} bids, {best[2] / n:.0f} candidates a request"
        )
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            one_pass()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(22)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "mix":
        bench_mix(
            [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [200, 20_000],
            int(sys.argv[3]) if len(sys.argv) > 3 else 3_000,
            "profile" in sys.argv[4:],
        )
        return
    if len(sys.argv) > 1 and sys.argv[1] == "gc":
        collections(
            int(sys.argv[2]) if len(sys.argv) > 2 else 20_000,
            int(sys.argv[3]) if len(sys.argv) > 3 else 3_000,
        )
        return
    if len(sys.argv) > 1 and sys.argv[1] == "change":
        one_campaign_change(
            int(sys.argv[2]) if len(sys.argv) > 2 else 20_000,
            int(sys.argv[3]) if len(sys.argv) > 3 else 3,
        )
        return
    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        memory(int(sys.argv[2]) if len(sys.argv) > 2 else 20_000)
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sizes = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [200]
    priors = "priors" in sys.argv[3:]
    for campaigns in sizes:
        start = time.perf_counter()
        pipeline = make_pipeline(campaigns, priors=priors)
        built = time.perf_counter() - start
        model = "prior model" if priors else "hashed linear model"
        print(
            f"{campaigns:,} campaigns ({campaigns * 5:,} creatives), {model}, built in "
            f"{built:.1f} s:"
        )
        run(pipeline, n)


def one_campaign_change(campaigns: int, times: int) -> None:
    import tempfile
    from pathlib import Path

    from bidder.sources import PortfolioFile, load_portfolio_file

    doc = synthetic.generate(campaigns, seed=3, creatives_per_campaign=5, now=NOW)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "portfolio.json"
        path.write_text(json.dumps(doc))
        reader = PortfolioFile(path)
        pipeline = make_pipeline(campaigns, snapshot=reader.read())  # as the service starts
        for k in range(times):
            doc["campaigns"][k]["max_bid_cpm"] = f"{20 + k}.00"
            path.write_text(json.dumps(doc))
            for label, read in (("reread, unchanged kept", reader.read), ("read anew", None)):
                start = time.perf_counter()
                snapshot = read() if read is not None else load_portfolio_file(path)
                took_read = time.perf_counter() - start
                wall, cpu = time.perf_counter(), time.process_time()
                incremental = pipeline.set_snapshot(snapshot)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(
                    f"{campaigns:,} campaigns, {label:22s}: read {took_read:.1f} s, apply "
                    f"{wall * 1e3:.0f} ms ({cpu * 1e3:.0f} ms CPU, "
                    f"{'incremental' if incremental else 'full'})"
                )


def collections(campaigns: int, n: int) -> None:
    import gc

    from bidder.collector import LongLived

    pipeline = make_pipeline(campaigns)
    rng = random.Random(7)
    bodies = [json.dumps(typical_request(rng, i, 2)).encode() for i in range(n)]
    started: list[float] = []
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses[info["generation"]].append(time.perf_counter() - started.pop())

    def one_pass(label: str) -> None:
        for p in pauses.values():
            p.clear()
        start = time.perf_counter()
        for body in bodies * 2:
            t = time.monotonic()
            pipeline.handle(body, arrival=t, clock=time.monotonic, wallclock=NOW.timestamp())
        took = time.perf_counter() - start
        full = sorted(pauses[2], reverse=True)
        young = pauses[0] + pauses[1]
        print(
            f"{label}: {2 * n:,} requests in {took:.1f} s; full collections {len(full)}"
            f" (longest {', '.join(f'{x * 1e3:.1f}' for x in full[:3]) or '-'} ms,"
            f" total {sum(full) * 1e3:.0f} ms); young {len(young)}"
            f" (longest {max(young, default=0) * 1e3:.2f} ms, total {sum(young) * 1e3:.0f} ms)"
        )

    gc.callbacks.append(timer)
    try:
        print(f"{campaigns:,} campaigns, {gc.get_count()} pending, thresholds {gc.get_threshold()}")
        one_pass("collector left alone")
        long_lived = LongLived()
        long_lived.installed()
        print(
            f"frozen: {gc.get_freeze_count():,} objects (the install's full collection took "
            f"{long_lived.last_pause * 1e3:.0f} ms)"
        )
        one_pass("snapshot frozen     ")
    finally:
        gc.callbacks.remove(timer)
        gc.unfreeze()


def run(pipeline: Pipeline, n: int) -> None:
    rng = random.Random(7)
    for at in (2, 1):
        bodies = [json.dumps(typical_request(rng, i, at)).encode() for i in range(n)]
        measure(pipeline, bodies)  # warm the memo tables
        base = baseline(bodies)
        us, bid_share, cands = measure(pipeline, bodies)
        crowded = [json.dumps(crowded_request(at)).encode()] * max(200, n // 10)
        us_c, _, cands_c = measure(pipeline, crowded)
        kind = "second price" if at == 2 else "first price"
        print(
            f"{kind:13s} typical: {us:7.1f} us/request ({us / base:5.1f}x baseline {base:.1f} us), "
            f"{bid_share:.0%} bids, {cands:.1f} candidates; "
            f"crowded: {us_c:7.1f} us ({cands_c:.0f} candidates)"
        )


if __name__ == "__main__":
    main()
