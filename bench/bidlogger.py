"""Bid logger throughput: events/s through one logger into the Postgres aggregates, and with the
raw sample on, against a raw COPY of the same rows measured in the same run.

    python -m bench bidlogger

A child process publishes synthetic transactions (auction, bid, win or loss, billing,
impression, click, install, in-app: every event type, in realistic proportions) with
``fleet.bus.Publisher`` through a ``python -m fleet.proxy`` process; the logger runs here with
its real subscriber, spool and Postgres writer process (an embedded Postgres in a temporary
directory); the CPU it prints per run is the logger's and its writer process's.
A run is timed from the first event received until every event is counted and its batch is
in Postgres (and, with the raw sample, the Parquet files are written).

- aggregates: all 64 partitions, no raw sample. Aim: >= 200,000 events/s.
- raw sample: every partition raw (Postgres rows and Parquet files), 600,000 events, against
- raw COPY of the same rows, the same columns and jsonb, built before the clock starts, into
  the same table: ``copy_records_to_table`` of the row tuples (through the parent table), and
  the logger's own binary COPY stream as bytes into the day's partition (Postgres's work
  alone, the strictest baseline). Aim: raw sample / raw COPY >= 0.5; both ratios are printed.
- the logger's CPU per raw event by step (fold, COPY stream, spool encoding, segment append with
  Arrow's JSON parse of the appended lines, closing the Parquet file), the same events without
  the bus and Postgres, the best of three rounds.

The figures depend on the machine's load (the logger, the publisher, the proxy and Postgres
share its CPUs); the load average is printed with them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bidlogger import BidLogger, BidloggerSettings
from bidlogger.aggregate import Aggregator, BidJoin, encode_batch
from bidlogger.copyfmt import encode_chunks, encode_raw
from bidlogger.parquet import Segments
from bidlogger.partitions import topic_partition, topic_type
from bidlogger.raw import RawRow
from bidlogger.service import tune_gc
from bidlogger.store import RAW_COLUMNS, Store, day_partition, utc
from fleet.bus import Publisher
from fleet.db import migrate
from fleet.events import (
    EVENT_TYPES,
    AnyEvent,
    AuctionEvent,
    BidEvent,
    BillingEvent,
    ClickEvent,
    ImpressionEvent,
    InAppEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
    encode,
    event_type,
    partition_of,
    topic_for,
)
from fleet.pg import LocalPostgres
from fleet.settings import FleetSettings

AGG_EVENTS = 600_000
# Long enough for steady state: the raw sample's last flush (up to a flush interval of events)
# is written after the last event is folded, a fixed tail of about a second and a half that
# the COPY baselines have no counterpart of; at 150,000 events it was half of the run.
RAW_EVENTS = 600_000
STEP_EVENTS = 150_000  # the per-step CPU breakdown, outside the timed runs
RUN_TIMEOUT = 90.0
_json = msgspec.json.Encoder()
START = 1_796_000_000.0


def transactions(events: int, seed: int = 5) -> list[AnyEvent]:
    """About ``events`` events of whole transactions, in time order per transaction."""
    rng = random.Random(seed)
    out: list[AnyEvent] = []
    i = 0
    while len(out) < events:
        txid = f"r{i:09d}:1:bidder-{i % 8}"
        ts = START + i * 0.0005
        campaign = rng.randrange(1, 200)
        creative = campaign * 10 + rng.randrange(4)
        bid = rng.randrange(200_000, 4_000_000)
        out.append(
            AuctionEvent(txid=txid, ts=ts, bidder_id="b", exchange="x", imps=1, outcome="bid")
        )
        out.append(
            BidEvent(
                txid=txid, ts=ts, imp_id="1", campaign_id=campaign, creative_id=creative,
                bid_cpm_micros=bid, floor_cpm_micros=100_000, value_cpm_micros=bid * 2,
                p_click=rng.random() / 40, p_install=rng.random() / 200, auction_type=1,
                features=["os=android", "country=USA"], model_version=3,
            )
        )  # fmt: skip
        i += 1
        if rng.random() < 0.6:
            out.append(
                LossEvent(
                    txid=txid, ts=ts + 0.1, campaign_id=campaign, creative_id=creative,
                    bid_cpm_micros=bid, loss_reason=102,
                )
            )  # fmt: skip
            continue
        clear = bid - rng.randrange(0, 200_000)
        common: dict[str, Any] = {"txid": txid, "campaign_id": campaign, "creative_id": creative}
        out.append(WinEvent(ts=ts + 0.1, bid_cpm_micros=bid, clear_cpm_micros=clear, **common))
        out.append(BillingEvent(ts=ts + 0.2, clear_cpm_micros=clear, cost_micros=clear // 1000,
                                **common))  # fmt: skip
        out.append(ImpressionEvent(ts=ts + 0.3, **common))
        if rng.random() < 0.05:
            out.append(ClickEvent(ts=ts + 2, **common))
            if rng.random() < 0.3:
                out.append(InstallEvent(ts=ts + 60, **common))
                out.append(InAppEvent(ts=ts + 90, name="purchase", revenue_micros=990_000,
                                      **common))  # fmt: skip
    return out[:events]


# -- the publishing child ----------------------------------------------------------------------


async def _publish(endpoint: str, count: int) -> None:
    encoded = [(topic_for(e), encode(e)) for e in transactions(count)]
    publisher = Publisher(
        endpoint, publisher_id="bench", hwm=1_000_000, join_timeout=3.0, close_timeout=10.0,
        batch_delay=0.05, batch_max=1024,
    )  # fmt: skip
    await publisher.start()
    publish = publisher.publish
    for i, (topic, payload) in enumerate(encoded):
        publish(topic, payload)
        if i % 2048 == 2047:
            await asyncio.sleep(0)
    await publisher.close()
    print(f"published {publisher.stats.sent_payloads} {publisher.stats.dropped_payloads}",
          flush=True)  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- runs --------------------------------------------------------------------------------------


async def _logger_run(
    dsn: str, proxy_in: str, proxy_out: str, root: Path, count: int, raw: bool
) -> tuple[float, int, float]:
    fleet = dataclasses.replace(FleetSettings(), event_bus_out=proxy_out, data_dir=root)
    settings = BidloggerSettings(
        partitions="all",
        raw_partitions="all" if raw else "",
        state_dir=str(root / ("raw" if raw else "agg")),
        flush_interval=1.0,
        maintenance_interval=3600.0,
        fleet=fleet,
    )
    logger = BidLogger(settings, dsn)
    await logger.start(consume=False)
    tune_gc(settings.gc_young)  # as the logger process does once started
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bidlogger", proxy_in, str(count), stdout=subprocess.PIPE
    )
    agg = logger.aggregator
    try:
        # everything published and queued in the logger's socket before it reads any of it
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), RUN_TIMEOUT)
        if not line.startswith(b"published"):
            raise RuntimeError(f"the publisher failed: {line!r}")
        await asyncio.sleep(0.5)  # the proxy forwards the tail
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_TIMEOUT
        first = time.perf_counter()
        cpu = time.process_time()
        writer_pid = logger.store.pid
        writer_cpu = _process_cpu(writer_pid)
        logger.consume()
        while loop.time() < deadline and sum(agg.events_in.values()) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        folded = time.perf_counter()
        await logger.flush(close_segments=raw)
        await logger.wait_written(max(1.0, deadline - loop.time()))
        last = time.perf_counter()
        cpu = time.process_time() - cpu
        writer_cpu = _process_cpu(writer_pid) - writer_cpu
        counted = sum(agg.events_in.values())
        stats = logger.subscriber.stats
        per_message = stats.received_payloads / max(1, stats.received_messages)
        print(
            f"    (folded in {folded - first:.2f} s, written {last - folded:.2f} s later; "
            f"{logger.batches['applied']} batches; {counted / (cpu + writer_cpu):,.0f} events per "
            f"CPU-second of the logger and its writer process ({writer_cpu:.2f} s of "
            f"{cpu + writer_cpu:.2f}), Postgres not included)"
        )
        return counted / max(last - first, 1e-9), counted, per_message
    finally:
        if child.returncode is None:
            child.terminate()
        await child.wait()
        await logger.close()


async def _raw_copy(dsn: str, count: int) -> tuple[float, float]:
    """Rows/s of two plain COPYs of the same raw rows, built in advance, same columns, same
    jsonb: ``copy_records_to_table`` of the row tuples into bidlogger_raw (asyncpg encodes
    them, Postgres routes each to its day), and the binary COPY stream the logger sends, as
    bytes, into the day's partition (Postgres's work alone)."""
    rows: list[RawRow] = []
    for e in transactions(count):
        rows.append(
            RawRow(e.ts, event_type(e), e.txid, partition_of(e.txid), getattr(e, "campaign_id", 0),
                   getattr(e, "creative_id", 0), _json.encode(e))
        )  # fmt: skip
    store = Store(dsn)
    days = {utc(r.ts).date() for r in rows}
    await store.ensure_days("bidlogger_raw", days)
    conn = await store.connect()
    records = [
        (utc(r.ts), r.event_type, r.txid, r.partition, r.campaign_id, r.creative_id, "copy", 1,
         r.json)
        for r in rows
    ]  # fmt: skip
    stream, _, _ = encode_raw(rows, "copy", 2)
    (day,) = days
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("bidlogger_raw", records=records, columns=RAW_COLUMNS)
        records_rate = count / (time.perf_counter() - started)
        started = time.perf_counter()
        await conn.copy_to_table(
            day_partition("bidlogger_raw", day), source=memoryview(stream), columns=RAW_COLUMNS,
            format="binary",
        )  # fmt: skip
        stream_rate = count / (time.perf_counter() - started)
        return records_rate, stream_rate
    finally:
        await store.close()


def _cpu_steps(count: int, rounds: int = 3) -> dict[str, float]:
    """CPU microseconds per raw event of each step of the logger's raw path, the bus and
    Postgres left out (the best of ``rounds``): the same events in batches of 256 per topic."""
    by_topic: dict[str, list[bytes]] = {}
    for e in transactions(count):
        by_topic.setdefault(topic_for(e), []).append(encode(e))
    deliveries = [
        (topic, payloads[i : i + 256])
        for topic, payloads in by_topic.items()
        for i in range(0, len(payloads), 256)
    ]

    def fold(raw: bool) -> Aggregator:
        agg = Aggregator(
            logger_id="bench", shard="all", partitions_covered=64, partitions_total=64,
            join=BidJoin(3600, 10**6), raw_partitions=frozenset(range(64) if raw else ()),
            raw_types=frozenset(EVENT_TYPES),
        )  # fmt: skip
        for topic, payloads in deliveries:
            agg.add(topic, topic_partition(topic), topic_type(topic), payloads)
        return agg

    def best(step: Callable[[], object]) -> float:
        times = []
        for _ in range(rounds):
            started = time.process_time()
            step()
            times.append(time.process_time() - started)
        return min(times) / count * 1e6

    steps = {"fold, aggregates alone": best(lambda: fold(False))}
    steps["fold, raw sample too"] = best(lambda: fold(True))
    agg = fold(True)
    batch = agg.flush(1)
    steps["COPY stream"] = best(lambda: encode_chunks(batch.chunks, "bench", 1))
    steps["spool encoding"] = best(lambda: encode_batch(msgspec.structs.replace(batch, chunks=[])))
    with tempfile.TemporaryDirectory() as tmp:
        segments = Segments(Path(tmp) / "s", Path(tmp) / "o", logger_id="bench",
                            max_rows=10**9, max_seconds=1e9)  # fmt: skip
        steps["segment append (and Arrow's JSON parse)"] = best(
            lambda: segments.append(batch.chunks, 0.0)
        )
        segments.close_due(0.0, 0.0, everything=True)
        segments.append(batch.chunks, 0.0)
        started = time.process_time()
        segments.close_due(0.0, 0.0, everything=True)
        steps["Parquet close (last rows, zstd)"] = (time.process_time() - started) / count * 1e6
    return steps


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user and system) of process ``pid`` so far (0 when it is not there)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _proxy() -> tuple[subprocess.Popen[bytes], str, str]:
    proxy = subprocess.Popen(
        [sys.executable, "-m", "fleet.proxy", "--in", "tcp://127.0.0.1:*", "--out",
         "tcp://127.0.0.1:*", "--hwm", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proxy.stdout is not None
    line = proxy.stdout.readline().decode()
    if not line.startswith("ready "):
        _stop(proxy)
        raise RuntimeError("fleet.proxy did not start")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return proxy, fields["in"], fields["out"]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="rtbfleet-bench-bidlogger-"))
    root.chmod(0o755)
    pg = LocalPostgres(root / "pg")
    proxy, inside, outside = _proxy()
    try:
        dsn = pg.start()
        asyncio.run(migrate(dsn))
        mix = transactions(20_000)
        share = {t: sum(1 for e in mix if event_type(e) == t) / len(mix) for t in ("auction",
                 "bid", "impression", "click")}  # fmt: skip
        print(f"bidlogger: load average {_load()} (1, 5, 15 min) on {os.cpu_count()} CPUs")
        print(
            "bidlogger: one logger process, all 64 partitions, through a proxy; mix "
            + ", ".join(f"{t} {v:.0%}" for t, v in share.items())
        )
        rate, n, per = asyncio.run(_logger_run(dsn, inside, outside, root, AGG_EVENTS, False))
        print(f"  aggregates into Postgres          : {rate:>10,.0f} events/s ({n:,}, "
              f"{per:.0f} per message)  (aim >= 200,000)")  # fmt: skip
        raw_rate, raw_n, per = asyncio.run(
            _logger_run(dsn, inside, outside, root, RAW_EVENTS, True)
        )
        print(f"  raw sample on (Postgres + Parquet): {raw_rate:>10,.0f} events/s ({raw_n:,}, "
              f"{per:.0f} per message)")  # fmt: skip
        copy_rate, stream_rate = asyncio.run(_raw_copy(dsn, RAW_EVENTS))
        print(f"  raw COPY of the same rows, records: {copy_rate:>10,.0f} rows/s  "
              "(asyncpg copy_records_to_table, into bidlogger_raw)")  # fmt: skip
        print(f"  raw COPY of the same rows, stream : {stream_rate:>10,.0f} rows/s  "
              "(the logger's binary COPY bytes, prebuilt, into the day's partition)")  # fmt: skip
        for label, rate in (("records", copy_rate), ("stream ", stream_rate)):
            print(f"  ratio raw sample / COPY {label}   : {raw_rate / rate:>10.2f}  (aim >= 0.5)")
        print(f"  load average after the runs       : {_load()}")
        steps = _cpu_steps(STEP_EVENTS)
        print("  the logger's CPU per raw event by step, without the bus and Postgres (µs): "
              + ", ".join(f"{name} {us:.2f}" for name, us in steps.items()))  # fmt: skip
    finally:
        _stop(proxy)
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3:
        asyncio.run(_publish(sys.argv[1], int(sys.argv[2])))
    else:
        main()
