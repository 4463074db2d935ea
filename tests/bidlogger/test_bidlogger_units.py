"""Partition sets, settings, the spool, Parquet segments, retention arithmetic and the metric
names the alerts and the dashboard use."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from bidlogger_world import world
from prometheus_client import CollectorRegistry

from bidlogger import parquet
from bidlogger.aggregate import Aggregator, Batch, BidJoin
from bidlogger.errors import PartitionSpecError, SpoolError
from bidlogger.maintenance import cutoff_day, partitions_to_drop
from bidlogger.metrics import BidloggerMetrics, Snapshot
from bidlogger.parquet import SCHEMAS, Segments, object_key, read_segment, table_of
from bidlogger.partitions import canonical, parse_partitions, prefixes, topic_partition
from bidlogger.positions import Loss, Position
from bidlogger.raw import RawChunk
from bidlogger.settings import BidloggerSettings
from bidlogger.spool import Spool, State
from fleet.errors import SettingsError
from fleet.events import EVENT_TYPES, encode, event_type, partition_of, topic_for

ROOT = Path(__file__).resolve().parents[2]


def test_partition_sets_parse_and_print_canonically() -> None:
    assert parse_partitions("all", 8) == frozenset(range(8))
    assert parse_partitions(" 0-2, 5,3 ", 8) == frozenset({0, 1, 2, 3, 5})
    assert parse_partitions("", 8) == frozenset()
    assert canonical({5, 0, 1, 2, 3, 7}, 8) == "0-3,5,7/8"
    for bad in ("8", "3-1", "x", "1-", "-1"):
        with pytest.raises(PartitionSpecError):
            parse_partitions(bad, 8)


def test_prefixes_per_partition_or_per_type() -> None:
    assert prefixes({7, 1}, EVENT_TYPES) == ["ev.0001.", "ev.0007."]
    assert prefixes({1}, ("bid", "click")) == ["ev.0001.bid", "ev.0001.click"]
    with pytest.raises(PartitionSpecError):
        prefixes({1}, ("bids",))
    assert topic_partition("ev.0042.bid") == 42 and topic_partition("co.cache.x") == -1


def test_settings_name_the_bad_variable() -> None:
    good = BidloggerSettings.from_env(
        {"RTBFLEET_BIDLOGGER_PARTITIONS": "0-15", "RTBFLEET_EVENT_PARTITIONS": "32"}, None
    )
    assert good.shard == "0-15/32" and good.effective_logger_id == "bidlogger-0-15of32"
    assert good.raw_held == frozenset({0})
    assert good.effective_state_dir == Path("data/bidlogger/bidlogger-0-15of32")
    for env, variable in (
        ({"RTBFLEET_BIDLOGGER_PARTITIONS": "0-99"}, "RTBFLEET_BIDLOGGER_PARTITIONS"),
        ({"RTBFLEET_BIDLOGGER_PARTITIONS": ""}, "RTBFLEET_BIDLOGGER_PARTITIONS"),
        ({"RTBFLEET_BIDLOGGER_EVENT_TYPES": "bid,bids"}, "RTBFLEET_BIDLOGGER_EVENT_TYPES"),
        ({"RTBFLEET_BIDLOGGER_ID": "a b"}, "RTBFLEET_BIDLOGGER_ID"),
        ({"RTBFLEET_BIDLOGGER_OBJECT_STORE": "gs://x"}, "RTBFLEET_BIDLOGGER_OBJECT_STORE"),
        ({"RTBFLEET_BIDLOGGER_HOURLY_DAYS": "2"}, "RTBFLEET_BIDLOGGER_HOURLY_DAYS"),
        ({"RTBFLEET_BIDLOGGER_FLUSH_SECONDS": "0"}, "RTBFLEET_BIDLOGGER_FLUSH_SECONDS"),
    ):
        with pytest.raises(SettingsError) as caught:
            BidloggerSettings.from_env(env, None)
        assert caught.value.variable == variable


def batch(seq: int, events: int = 3) -> Batch:
    return Batch(
        logger_id="l", seq=seq, shard="0-63/64", partitions_covered=64, partitions_total=64,
        events=events, rows=[], coverage=[], positions=[Position("p", "t", 1, seq, seq * 3)],
        losses=[Loss("gap", "p", "t", 1)], raw=[],
    )  # fmt: skip


def test_spool_keeps_order_bounds_bytes_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=400)
    assert spool.put(batch(2)) and spool.put(batch(1))
    assert spool.oldest() == 1 and spool.read(1) == batch(1)
    while spool.put(batch(3 + len(spool))):
        pass
    assert spool.refused == 1 and spool.bytes <= 400
    again = Spool(tmp_path, max_bytes=400)
    assert len(again) == len(spool) and again.last_seq == spool.last_seq
    again.remove(1)
    assert again.oldest() == 2
    again.save_state(State(9, [Position("p", "t", 1, 2, 3)]))
    assert Spool(tmp_path, 400).load_state() == State(9, [Position("p", "t", 1, 2, 3)])
    (tmp_path / f"{50:020d}.batch").write_bytes(b"not a batch")
    broken = Spool(tmp_path, 10_000)
    with pytest.raises(Exception, match="unreadable"):
        broken.read(50)
    assert (tmp_path / "bad" / f"{50:020d}.batch").exists() and 50 not in broken._sizes


def test_segments_close_into_hourly_parquet_files_and_recover_after_a_crash(
    tmp_path: Path,
) -> None:
    events = [e for tx in world(150, start=1_796_000_000.0 - 600) for e in tx]
    agg = Aggregator(
        logger_id="l", shard="0-63/64", partitions_covered=64, partitions_total=64,
        join=BidJoin(60, 100), raw_partitions=frozenset(range(64)),
        raw_types=frozenset(EVENT_TYPES),
    )  # fmt: skip
    for e in events:
        topic = topic_for(e)
        agg.add(topic, partition_of(e.txid), event_type(e), [encode(e)])
    rows = agg.flush(1).chunks  # one event each
    segments = Segments(tmp_path / "seg", tmp_path / "out", logger_id="l", max_rows=10**6,
                        max_seconds=60)  # fmt: skip
    segments.append(rows[:200], now=0.0)
    segments.append(rows[200:], now=1.0)
    assert segments.close_due(now=2.0, watermark=0.0) == []
    # a crash: a torn last line, then a new process recovers the open segments
    victim = next((tmp_path / "seg").glob("bid.*.seg"))
    with open(victim, "ab") as f:
        f.write(b'{"type":"bid","txid":"torn')
    again = Segments(tmp_path / "seg", tmp_path / "out", logger_id="l", max_rows=10**6,
                     max_seconds=60)  # fmt: skip
    made = again.recover()
    assert not list((tmp_path / "seg").glob("*.seg"))
    total = 0
    for path in made:
        kind = path.parts[-4].removeprefix("type=")
        table = pq.read_table(path)
        assert table.schema == SCHEMAS[kind]
        total += table.num_rows
    assert total == len(rows)
    key = object_key("bid", 1_796_000_000 // 3600 * 3600, "l", 7)
    assert key == "events/type=bid/date=2026-11-30/hour=00/l-000000000007.parquet"


def test_segments_close_when_full_old_or_past_their_hour(tmp_path: Path) -> None:
    events = [e for tx in world(40) for e in tx if event_type(e) == "bid"]
    agg = Aggregator(
        logger_id="l", shard="s", partitions_covered=64, partitions_total=64,
        join=BidJoin(60, 100), raw_partitions=frozenset(range(64)), raw_types=frozenset({"bid"}),
    )  # fmt: skip
    for e in events:
        agg.add(topic_for(e), partition_of(e.txid), "bid", [encode(e)])
    rows = agg.flush(1).chunks  # one event each
    segs = Segments(tmp_path / "s", tmp_path / "o", logger_id="l", max_rows=30, max_seconds=100)
    segs.append(rows[:10], now=0.0)
    assert segs.close_due(now=50.0, watermark=0.0) == []
    assert len(segs.close_due(now=100.0, watermark=0.0)) == 1  # old
    segs.append(rows[:30], now=200.0)
    assert len(segs.close_due(now=201.0, watermark=0.0)) == 1  # full
    segs.append(rows[:5], now=300.0)
    hour_end = int(rows[0].stamps[0]) // 3600 * 3600 + 3600
    assert segs.close_due(now=301.0, watermark=hour_end) == []
    assert len(segs.close_due(now=301.0, watermark=hour_end + 120)) == 1  # its hour is over


def test_a_chunk_across_an_hour_goes_to_each_hour_s_segment(tmp_path: Path) -> None:
    start = 1_796_000_000 // 3600 * 3600 + 3598.5  # bids either side of an hour's end
    bids = [e for tx in world(20) for e in tx if event_type(e) == "bid"][:6]
    bids = [msgspec.structs.replace(e, ts=start + i * 0.5) for i, e in enumerate(bids)]
    hours = {int(e.ts) // 3600 for e in bids}
    assert len(hours) == 2
    agg = Aggregator(
        logger_id="l", shard="s", partitions_covered=64, partitions_total=64,
        join=BidJoin(60, 100), raw_partitions=frozenset(range(64)), raw_types=frozenset({"bid"}),
        check_partition=False,
    )  # fmt: skip
    agg.add("ev.0.bid", 0, "bid", [encode(e) for e in bids])
    (chunk,) = agg.flush(1).chunks
    segs = Segments(tmp_path / "s", tmp_path / "o", logger_id="l", max_rows=100, max_seconds=100)
    segs.append([chunk], now=0.0)
    made = segs.close_due(now=1.0, watermark=0.0, everything=True)
    assert len(made) == 2
    seen = []
    for path in made:
        table = pq.read_table(path)
        hour = {int(ts) // 3600 for ts in table.column("ts").to_pylist()}
        assert len(hour) == 1 and path.parts[-2] == f"hour={hour.pop() % 24:02d}"
        seen += table.column("txid").to_pylist()
    assert sorted(seen) == sorted(e.txid for e in bids)


def test_a_segment_built_as_it_fills_equals_its_lines_converted_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 25)  # several row groups from a few flushes
    events = [e for tx in world(120) for e in tx]
    agg = Aggregator(
        logger_id="l", shard="s", partitions_covered=64, partitions_total=64,
        join=BidJoin(60, 1000), raw_partitions=frozenset(range(64)),
        raw_types=frozenset(EVENT_TYPES),
    )  # fmt: skip
    for e in events:
        agg.add(topic_for(e), partition_of(e.txid), event_type(e), [encode(e)])
    chunks = agg.flush(1).chunks
    segs = Segments(tmp_path / "s", tmp_path / "o", logger_id="l", max_rows=10**6,
                    max_seconds=1e9)  # fmt: skip
    for i in range(0, len(chunks), 40):  # one flush each
        segs.append(chunks[i : i + 40], now=0.0)
    assert list((tmp_path / "s").glob("*.part"))  # row groups written already
    whole = {p.name.split(".")[0]: table_of(p.name.split(".")[0], read_segment(p))
             for p in (tmp_path / "s").glob("*.seg")}  # fmt: skip
    made = segs.close_due(now=0.0, watermark=0.0, everything=True)
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["next_seq"]
    assert {p.parts[-4].removeprefix("type=") for p in made} == set(whole)
    grouped = 0
    for path in made:
        kind = path.parts[-4].removeprefix("type=")
        table = pq.read_table(path)
        assert table.schema == SCHEMAS[kind]
        assert table.equals(whole[kind])
        grouped += pq.ParquetFile(path).num_row_groups > 1
    assert grouped  # the larger types went out in several row groups
    assert segs.rows_written == len(events) == sum(len(c) for c in chunks)


def test_lines_arrow_cannot_parse_fail_at_close_as_before_and_a_crash_drops_the_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 1)  # every append goes out as a row group
    bids = [e for tx in world(10) for e in tx if event_type(e) == "bid"]
    agg = Aggregator(
        logger_id="l", shard="s", partitions_covered=64, partitions_total=64,
        join=BidJoin(60, 100), raw_partitions=frozenset(range(64)), raw_types=frozenset({"bid"}),
    )  # fmt: skip
    for e in bids:
        agg.add(topic_for(e), partition_of(e.txid), "bid", [encode(e)])
    good = agg.flush(1).chunks
    ts = good[0].stamps[0]
    bad = RawChunk("bid", 0, [ts], ["t"], [1], [1], b'{"type":"bid","campaign_id":"x"}\n')
    segs = Segments(tmp_path / "s", tmp_path / "o", logger_id="l", max_rows=10**6,
                    max_seconds=1e9)  # fmt: skip
    segs.append(good, now=0.0)
    assert list((tmp_path / "s").glob("*.part"))
    segs.append([bad], now=0.0)  # taken on disk; the file under construction is dropped
    assert not list((tmp_path / "s").glob("*.part"))
    with pytest.raises(SpoolError, match="Parquet"):
        segs.close_due(now=0.0, watermark=0.0, everything=True)

    # a crash with a file under construction: made again whole from the segment's lines
    crashed = Segments(tmp_path / "c", tmp_path / "co", logger_id="l", max_rows=10**6,
                       max_seconds=1e9)  # fmt: skip
    crashed.append(good, now=0.0)
    (part,) = (tmp_path / "c").glob("*.part")
    part.write_bytes(b"PAR1 torn")
    again = Segments(tmp_path / "c", tmp_path / "co", logger_id="l", max_rows=10**6,
                     max_seconds=1e9)  # fmt: skip
    (made,) = again.recover()
    assert not list((tmp_path / "c").glob("*.part"))
    assert pq.read_table(made).num_rows == len(bids)


def test_retention_keeps_whole_days() -> None:
    now = 1_796_000_000.0  # 2026-11-30
    assert cutoff_day(now, 1) == date(2026, 11, 30)
    assert cutoff_day(now, 7) == date(2026, 11, 24)
    names = ["bidlogger_raw_20261123", "bidlogger_raw_20261124", "bidlogger_minute_20261101",
             "bidlogger_rawx_20261101", "other_20261101"]  # fmt: skip
    assert partitions_to_drop(names, date(2026, 11, 24)) == [
        "bidlogger_minute_20261101",
        "bidlogger_raw_20261123",
    ]


def test_alerts_and_dashboard_use_only_metrics_the_logger_exports() -> None:
    registry = CollectorRegistry()
    BidloggerMetrics(registry, Snapshot)
    exported = set()
    for family in registry.collect():
        exported.update(sample.name for sample in family.samples)
        exported.add(family.name)
        if family.type == "counter":
            exported.add(f"{family.name}_total")
    text = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    text += json.dumps(json.loads((ROOT / "deploy/grafana/rtbfleet-dashboard.json").read_text()))
    used = set(re.findall(r"\b(bidlogger_[a-z_]+)", text)) - {"bidlogger_losses"}
    assert used, "no bid-logger metric in the alerts or the dashboard"
    assert used <= exported, used - exported


def test_the_logger_process_collects_young_garbage_less_often_and_zero_leaves_it() -> None:
    import gc

    from bidlogger.service import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0  # what existed at start is out of the scans
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
