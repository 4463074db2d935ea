from __future__ import annotations

import gzip
import json
import random
import statistics
from collections import Counter
from typing import Any

from sim_helpers import START, make_traffic

from sim import tcf
from sim import vocabulary as vocab
from sim.market import Market, MarketParams
from sim.traffic import Schedule, SimRequest, Traffic


def _json(request: SimRequest) -> dict[str, Any]:
    body = gzip.decompress(request.body) if request.gzip else request.body
    doc: dict[str, Any] = json.loads(body)
    return doc


def _requests(market: Market, n: int, seed: int = 1) -> list[SimRequest]:
    traffic = make_traffic(market, seed)
    schedule = Schedule(market, random.Random(seed), rate=500, time_scale=576, sim_start=START)
    return [traffic.request(schedule.next()[1]) for _ in range(n)]


def test_same_seed_same_traffic() -> None:
    a = Market(MarketParams(users=500, placements=40), seed=3)
    b = Market(MarketParams(users=500, placements=40), seed=3)
    ra, rb = _requests(a, 300), _requests(b, 300)
    assert [r.body for r in ra] == [r.body for r in rb]
    assert [r.id for r in ra] == [r.id for r in rb]
    other = _requests(Market(MarketParams(users=500, placements=40), seed=4), 300)
    assert [r.body for r in other] != [r.body for r in ra]


def test_schedule_is_open_loop_and_follows_the_rate(market: Market) -> None:
    schedule = Schedule(market, random.Random(1), rate=1000, time_scale=576, sim_start=START)
    times = [schedule.next() for _ in range(20_000)]
    real = [t for t, _ in times]
    assert real == sorted(real)
    # over 20 s the daily cycle moves the rate, but it stays within its ±40 % band
    assert 600 < len(real) / real[-1] < 1400
    for t, sim_ts in times[:10]:
        assert abs(sim_ts - (START + t * 576)) < 1e-6


def test_base_rates_in_range(market: Market) -> None:
    rng = random.Random(5)
    opps = [market.draw(rng, START + i * 7.0) for i in range(6000)]
    humans = [o for o in opps if not o.user.crawler]
    ctr = statistics.mean(
        market.p_click(o, o.slots[0], 1 + i % 9, 100 + i % 17) for i, o in enumerate(humans)
    )
    install = statistics.mean(
        market.p_install_given_click(o, o.slots[0], 1 + i % 9) for i, o in enumerate(humans)
    )
    assert 0.005 < ctr < 0.02, ctr
    assert 0.01 < install < 0.10, install
    first_price = sum(o.auction_type == 1 for o in opps) / len(opps)
    assert 0.55 < first_price < 0.65, first_price
    crawlers = sum(o.user.crawler for o in opps) / len(opps)
    assert 0.001 < crawlers < 0.03, crawlers
    assert all(market.p_click(o, o.slots[0], 1, 1) == 0.0 for o in opps if o.user.crawler)
    prices = sorted(s.competing_usd_micros for o in opps for s in o.slots)
    median = prices[len(prices) // 2]
    assert 300_000 < median < 3_000_000, median  # CPM 0.3 - 3 USD
    assert 0.03 < prices.count(0) / len(prices) < 0.15


def test_truth_depends_on_user_and_campaign(market: Market) -> None:
    rng = random.Random(9)
    opps = [o for o in (market.draw(rng, START) for _ in range(500)) if not o.user.crawler]
    by_campaign = [
        statistics.mean(market.p_click(o, o.slots[0], c, 1) for o in opps) for c in range(1, 8)
    ]
    assert max(by_campaign) / min(by_campaign) > 1.2  # campaigns differ
    # the interaction: the best campaign for one user is not the best for every user
    best = {max(range(1, 8), key=lambda c: market.p_click(o, o.slots[0], c, 1)) for o in opps}
    assert len(best) > 2


def test_requests_look_like_real_exchanges(market: Market) -> None:
    requests = _requests(market, 3000)
    docs = [(_json(r), r) for r in requests]
    tmaxes = Counter(d.get("tmax") for d, _ in docs)
    assert None in tmaxes and set(tmaxes) - {None} <= {80, 100, 120, 150, 200, 250, 300}
    assert all(r.deadline_ms == (d.get("tmax") or 100) for d, r in docs)
    currencies = Counter(i.get("bidfloorcur") for d, _ in docs for i in d["imp"])
    assert currencies["EUR"] and currencies["GBP"] and currencies["USD"]
    formats = Counter(
        k for d, _ in docs for i in d["imp"] for k in ("banner", "video", "native") if k in i
    )
    assert all(formats[k] > 50 for k in ("banner", "video", "native")), formats
    assert sum("app" in d for d, _ in docs) > 1000 and sum("site" in d for d, _ in docs) > 300
    assert sum(1 for d, _ in docs for i in d["imp"] if "pmp" in i) > 30
    assert any(d.get("regs", {}).get("coppa") == 1 for d, _ in docs)
    assert any("bot" in d["device"]["ua"].lower() for d, _ in docs)
    assert 400 < sum(r.gzip for r in requests) < 800
    assert any(len(d["imp"]) > 1 for d, _ in docs)
    for d, r in docs:
        assert d["id"] == r.id
        assert d["device"]["geo"]["country"] in vocab.COUNTRIES
        for imp in d["imp"]:
            if "bidfloor" in imp:
                assert imp["bidfloor"] > 0 and imp["bidfloorcur"] in vocab.FX_PER_USD_MICROS


def test_privacy_layouts_25_and_26(market: Market) -> None:
    seen: Counter[str] = Counter()
    for request in _requests(market, 3000):
        doc = _json(request)
        opp = request.opportunity
        regs, user, source = doc.get("regs", {}), doc.get("user", {}), doc["source"]
        if request.version == "2.5":
            assert "schain" in source["ext"] and "schain" not in source
            gdpr, consent = regs.get("ext", {}).get("gdpr"), user.get("ext", {}).get("consent")
            assert "gdpr" not in regs and "consent" not in user
        else:
            assert "schain" in source
            gdpr, consent = regs.get("gdpr"), user.get("consent")
        assert (gdpr == 1) == opp.gdpr
        if consent:
            decoded = tcf.decode(consent)
            assert decoded.allows(market.params.vendor_id) == opp.consent_ok
            seen["consent_ok" if opp.consent_ok else "consent_refused"] += 1
        elif opp.gdpr:
            seen["no_string"] += 1
        if opp.us_privacy:
            seen["usp"] += 1
    assert seen["consent_ok"] and seen["consent_refused"] and seen["no_string"] and seen["usp"]


def test_a_run_tag_makes_request_ids_unique_across_runs_and_changes_nothing_else(
    market: Market,
) -> None:
    """Two runs of one seed: the same requests but for their ids, which the tracker must not
    take for the earlier run's transactions."""

    def first(tag: str) -> SimRequest:
        traffic = Traffic(
            market,
            random.Random(1),
            gzip_share=0.0,
            ortb25_share=0.0,
            default_tmax_ms=100,
            id_prefix=tag,
        )
        return traffic.request(START)

    a, b = first("run1-"), first("run2-")
    assert a.id.startswith("run1-") and b.id.startswith("run2-")
    assert a.id.removeprefix("run1-") == b.id.removeprefix("run2-")
    assert a.body.replace(b"run1-", b"") == b.body.replace(b"run2-", b"")
