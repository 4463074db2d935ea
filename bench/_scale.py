"""The bidder at several portfolio sizes: the scaling table of ``bench/bidder.py``.

For each size (campaigns with 5 creatives each, generated from one seed), one bidder process on
the same request mix, load generator and model as the rest of the bench. Every size's bidder is
up at once and they are measured in turn, round after round (closed loop, served requests
only), so that each round's ratio to the smallest size compares neighbours in time on a machine
whose speed drifts: the maximum is each size's median over the rounds, "vs smallest" the
median of the per-round ratios (with their range), and the server's CPU time per answer is
reported the same way. Then, one size at a time: p50/p99 at half its maximum (open loop),
resident memory once it has served, and the time the serving process takes to apply a
one-campaign change (the portfolio file rewritten with one campaign's maximum bid changed, read
from ``bidder_config_apply_seconds{kind="incremental"}``; the median of three changes).
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CHANGES = 3
_APPLY = 'bidder_config_apply_seconds{kind="incremental"}'


def _apply_seconds(port: int) -> float | None:
    """The last incremental apply's seconds; None before one (or when /metrics is slow to
    answer on a loaded machine: the caller asks again)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(_APPLY):
            return float(line.rsplit(" ", 1)[1])
    return None


def one_campaign_changes(path: Path, doc: dict[str, Any], port: int) -> list[float]:
    """Rewrite the portfolio file ``CHANGES`` times, one campaign's maximum bid changed each
    time, and wait for the bidder to apply each: the apply times in seconds."""
    times: list[float] = []
    campaigns = doc["campaigns"]
    for k in range(CHANGES):
        c = campaigns[(k * 7919) % len(campaigns)]
        c["max_bid_cpm"] = f"{float(c['max_bid_cpm']) + 0.01:.2f}"
        before = _apply_seconds(port)
        path.write_text(json.dumps(doc))
        deadline = time.monotonic() + 120.0  # rereading 20,000 campaigns takes seconds
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = _apply_seconds(port)
            if now is not None and now != before:
                times.append(now)
                break
        else:
            raise RuntimeError("the bidder did not apply a one-campaign change within 120 s")
    return times


def scaling_table(
    work: Path,
    sizes: Sequence[int],
    run_all: Callable[[list[Path]], list[dict[str, Any]]],
    generate: Callable[[int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per size: ``run_all(portfolios)`` measures a bidder on each, in the same run."""
    paths, docs = [], []
    for n in sizes:
        doc = generate(n)
        path = work / f"portfolio-{n}.json"
        path.write_text(json.dumps(doc))
        paths.append(path)
        docs.append(doc)
    rows = run_all(paths)
    for row, n, doc in zip(rows, sizes, docs, strict=True):
        row["campaigns"] = n
        row["creatives"] = sum(len(c["creatives"]) for c in doc["campaigns"])
    return rows


def _spread(values: Sequence[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):.2f}x ({ordered[0]:.2f}-{ordered[-1]:.2f})"


def print_table(rows: Sequence[dict[str, Any]], echo_rate: float) -> None:
    print(
        f"scaling (same request mix and model; every size up at once and measured in turn, "
        f"{len(rows[0]['rates']) if rows else 0} rounds; echo baseline {echo_rate:,.0f} req/s; "
        f"figures on a shared machine are rough):"
    )
    print(
        "| campaigns | creatives | maximum req/s | vs smallest (per round) | CPU per answer us "
        "(vs smallest) | p50 / p99 at half load ms | resident MiB | one-campaign change ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0] if rows else None
    for r in rows:
        assert base is not None
        change = statistics.median(r["changes"]) * 1000 if r["changes"] else float("nan")
        ratios = [a / max(b, 1e-9) for a, b in zip(r["rates"], base["rates"], strict=True)]
        cpu_ratios = [b / max(a, 1e-12) for a, b in zip(r["cpu"], base["cpu"], strict=True)]
        print(
            f"| {r['campaigns']:,} | {r['creatives']:,} | {r['max_rate']:,.0f} | "
            f"{_spread(ratios)} | {statistics.median(r['cpu']) * 1e6:,.0f} "
            f"({_spread(cpu_ratios)}) | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
            f"{r['rss']:.0f} | {change:.0f} |"
        )
    print(
        "aims: the largest >= 0.5x the smallest's maximum; p99 at half load < 10 ms; "
        "resident < 1024 MiB at 20,000 campaigns; one-campaign change < 100 ms"
    )
