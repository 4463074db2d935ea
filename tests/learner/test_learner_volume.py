"""The learning-curve-by-volume measurement (bench.learning_volume) on a tiny stream: it runs on
the demo's market through the bidder's features, and its shares mean what the report's do."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bench import learning_volume as lv


@pytest.fixture(scope="module")
def tiny() -> tuple[lv.Stream, lv.ImpressionSource]:
    return lv.run(1600, demo=800, seed=1)


def test_the_stream_is_the_demos_market_scored_before_it_is_learnt(
    tiny: tuple[lv.Stream, lv.ImpressionSource],
) -> None:
    stream, source = tiny
    assert len(stream.p) == 1600 and source.offered >= 1600
    assert np.all((stream.p >= 0) & (stream.p < 1)) and np.all((stream.q > 0) & (stream.q < 1))
    assert 0 < stream.y.sum() < 0.1 * len(stream.y)  # clicks at about the market's 1 %
    # progressive: the first impressions are scored by the warm start, the demo's prior
    prior = lv.learner_of_the_demo().config.click_prior
    assert stream.q[0] == pytest.approx(prior, rel=1e-6)
    known = {e.campaign.id for e in source.index.entries}
    assert set(stream.campaigns.tolist()) <= known
    assert 0 < stream.personal.mean() < 1  # privacy withholds the segments of some


def test_the_features_are_the_bidders_with_segment_crosses_where_privacy_allows() -> None:
    source = lv.ImpressionSource(seed=1, demo=800)
    crossed_personal, withheld = 0, 0
    for i in range(400):
        found = source.impression(i)
        if found is None:
            continue
        features, p, user, personal, campaign = found
        assert f"campaign={campaign}" in features
        crossed = [f for f in features if f.startswith(f"campaign^seg={campaign}^")]
        segments = [f for f in features if f.startswith("seg=")]
        assert len(crossed) == len(segments)
        if not personal:
            assert not crossed
            withheld += 1
        crossed_personal += bool(crossed)
        assert 0 <= p < 1 and 0 <= user < len(source.market.users)
    assert crossed_personal > 0 and withheld > 0


def test_the_share_is_the_reports(tiny: tuple[lv.Stream, lv.ImpressionSource]) -> None:
    stream, source = tiny
    r = lv.measure(stream, len(stream.p), source.market, seed=1)
    assert r["impressions"] == 1600 and r["clicks"] == int(stream.y.sum())
    assert 0.0 < r["share"] < 3.0  # a learner after 1,600 impressions: not the truth
    low, high = r["interval"]
    assert low <= r["share"] <= high
    b = r["bounds"]
    assert 0.0 < b["with_segments"] < b["without_user"] < 1.0
    assert r["bound_sample"] == 400
    # the same definition at its ends: the truth scores 0, the best constant 1
    a = 1200
    truth = dataclasses.replace(stream, q=stream.p.copy())
    assert lv.measure(truth, 1600, source.market, 1)["share"] == pytest.approx(0.0, abs=1e-9)
    flat = stream.q.copy()
    flat[a:] = stream.p[a:].mean()
    constant = dataclasses.replace(stream, q=flat)
    assert lv.measure(constant, 1600, source.market, 1)["share"] == pytest.approx(1.0)


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert lv.main(["--volume", "--demo", "400", "--multiples", "1,2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert [r[1] for r in rows] == ["400", "800"]
    assert all(r[4].endswith("%") and not math.isnan(float(r[4][:-1])) for r in rows)
    assert lv.main(["--demo", "400", "--multiples", "x"]) == 2
