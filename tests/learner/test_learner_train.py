"""Offline training from JSON lines and Parquet event files, and its one-line errors."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleet.events import AnyEvent
from fleet.model import decode_sparse
from learner.settings import LearnerSettings, parse_grid
from learner.synthetic import ClickWorld, event_stream
from learner.train import Progress, main


@pytest.fixture(scope="module")
def events() -> list[AnyEvent]:
    rng = np.random.default_rng(8)
    return event_stream(ClickWorld(rng, base_rate=0.05), rng, 6000)


@pytest.fixture(autouse=True)
def small_grid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("RTBFLEET_LEARNER_CLICK_GRID", "alpha=0.1,l1=0.5,bits=14;alpha=0.05,bits=14")
    monkeypatch.setenv("RTBFLEET_LEARNER_INSTALL_GRID", "alpha=0.1,bits=12")
    monkeypatch.setenv("RTBFLEET_LEARNER_BLOCK_EXAMPLES", "200")
    monkeypatch.setenv("RTBFLEET_LEARNER_WINDOW_BLOCKS", "10")


def write_jsonl(path: Path, events: list[AnyEvent]) -> None:
    data = b"".join(msgspec.json.encode(e) + b"\n" for e in events)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_parquet(path: Path, events: list[AnyEvent]) -> None:
    rows = [msgspec.to_builtins(e) for e in events]
    columns = sorted({k for r in rows for k in r})
    pq.write_table(
        pa.table({c: [r.get(c) for r in rows] for c in columns}), path, row_group_size=2000
    )


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def test_jsonl_and_parquet_train_the_same_model(events: list[AnyEvent], tmp_path: Path) -> None:
    half = len(events) // 2
    write_jsonl(tmp_path / "a.jsonl", events[:half])
    write_jsonl(tmp_path / "b.jsonl.gz", events[half:])
    write_parquet(tmp_path / "a.parquet", events[:half])
    write_parquet(tmp_path / "b.parquet", events[half:])
    code, text = run(["a.jsonl", "b.jsonl.gz", "--out", "j.rtbm", "--version", "4", "--quiet"])
    assert code == 0, text
    assert "click:" in text and "market:" in text and "heaviest click features" in text
    code, text2 = run(["a.parquet", "b.parquet", "--out", "p.rtbm", "--version", "4"])
    assert code == 0, text2
    j, p = (tmp_path / "j.rtbm").read_bytes(), (tmp_path / "p.rtbm").read_bytes()
    assert j == p
    model = decode_sparse(j)
    assert model.version == 4 and model.bits == 14 and model.nonzero > 100
    assert "2|ex|US|320x50" in model.market.segments


def test_checkpoint_resume_equals_one_run(events: list[AnyEvent], tmp_path: Path) -> None:
    half = len(events) // 2
    write_jsonl(tmp_path / "a.jsonl", events[:half])
    write_jsonl(tmp_path / "b.jsonl", events[half:])
    common = ["--version", "1", "--quiet"]
    assert (
        run(["a.jsonl", "b.jsonl", "--checkpoint", "one.ckpt", "--out", "one.rtbm", *common])[0]
        == 0
    )
    assert run(["a.jsonl", "--checkpoint", "two.ckpt", "--out", "x.rtbm", *common])[0] == 0
    assert run(["b.jsonl", "--checkpoint", "two.ckpt", "--out", "two.rtbm", *common])[0] == 0
    one, two = (tmp_path / "one.rtbm").read_bytes(), (tmp_path / "two.rtbm").read_bytes()
    assert one == two and decode_sparse(one).nonzero > 0
    # --final settles what waits (here with no new events): more examples, another model
    (tmp_path / "empty.jsonl").write_bytes(b"")
    final = ["empty.jsonl", "--checkpoint", "one.ckpt", "--final", "--out", "f.rtbm", *common]
    assert run(final)[0] == 0
    assert (tmp_path / "f.rtbm").read_bytes() != one


def test_bad_record_is_one_line_and_keeps_what_was_learnt(
    events: list[AnyEvent], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tmp_path / "bad.jsonl", events[:3000])
    with open(tmp_path / "bad.jsonl", "ab") as f:
        f.write(b'{"type": "bid", "txid": 5}\n')
    code, _ = run(["bad.jsonl", "--checkpoint", "c.ckpt", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("train: bad.jsonl:3001: ")
    assert (tmp_path / "c.ckpt").stat().st_size > 0  # what came before is not lost
    assert not (tmp_path / "model.rtbm").exists()


def test_missing_and_unknown_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["nope.jsonl"])[0] == 2
    (tmp_path / "x.csv").write_text("a,b\n")
    assert run(["x.csv", "--quiet"])[0] == 2
    (tmp_path / "y.parquet").write_bytes(b"not parquet")
    assert run(["y.parquet", "--quiet"])[0] == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("train: ") for line in lines)
    assert "unknown file type" in lines[1] and "Parquet" in lines[2]


def test_bad_settings_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTBFLEET_LEARNER_CLICK_GRID", "alpha=-1")
    assert run(["x.jsonl"])[0] == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: RTBFLEET_LEARNER_CLICK_GRID: ")
    assert err.endswith("estimator 1: alpha must be a positive number")


def test_grid_parsing() -> None:
    grid = parse_grid("alpha=0.2,bits=18,half_life=1e6;loss=squared")
    assert grid[0].alpha == 0.2 and grid[0].bits == 18 and grid[0].half_life == 1e6
    assert grid[1].loss == "squared"
    assert LearnerSettings.from_env({}, None).to_config().click_grid[0].bits == 20


def test_progress_bar_lines() -> None:
    out = io.StringIO()
    now = [0.0]
    p = Progress(1000, out, clock=lambda: now[0])
    now[0] = 10.0
    p.update(500, 2000, 1000, "a.jsonl")
    p.finish(4000, 2000)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(
        "[###############               ]  50.0% 2,000 events 1,000 examples"
    )
    assert "100 ex/s a.jsonl" in lines[0]
    assert "100.0%" in lines[1] and lines[1].endswith("done")
