"""An imp's candidate set over arrays (bidder.candidates) against the index's list of them, on
the bench's request mix at two portfolio sizes, before and after an incremental update; the
selection of a shape's runs on an updated index; and the keyed draws the lazy creative choice
rests on."""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest
from msgspec.structs import replace
from perf_pipeline import NOW, crowded_request, make_pipeline, typical_request

from bidder import _bounds
from bidder.candidates import (
    CandidateSet,
    candidate_set,
    little_words,
    python_select_runs,
    shape_runs,
)
from bidder.index_update import apply_changes
from bidder.openrtb import BidRequest
from bidder.race import draw_key, exponentials, unit
from bidder.targeting import TargetingIndex, request_view
from fleet import portfolio
from fleet.config import ConfigSnapshot
from sim import portfolio as synthetic
from sim import vocabulary as vocab


def _columns(s: CandidateSet) -> list[tuple[int, int, bool, int, list[int]]]:
    return [
        (
            int(s.entries[k]),
            int(s.max_bids[k]),
            bool(s.capped[k]),
            int(s.campaign_ids[k]),
            s.flat[s.starts[k] : s.starts[k + 1]].tolist(),
        )
        for k in range(len(s))
    ]


def _check(index: TargetingIndex, requests: list[BidRequest]) -> int:
    seen = 0
    wallclock = NOW.timestamp()
    for req in requests:
        view = request_view(req, personalize=True, wallclock=wallclock)
        mask = index.request_mask(view, wallclock)
        creatives = index.all_creatives & ~index.blocked_creatives(req)
        for imp in req.imp:
            listed = index.candidates(imp, mask, creatives)
            got = candidate_set(index, imp, mask, creatives)
            # the same candidates (in the order of their first creative), the same columns
            # as the list's own, and each made into the list's candidate
            want = sorted(listed, key=lambda c: c.positions[0])
            assert _columns(got) == _columns(CandidateSet.from_list(want))
            assert [got.get(k) for k in range(len(got))] == want
            seen += len(got)
            if len(got) and not (imp.pmp and imp.pmp.deals):
                # remembered from the second sighting of its campaigns and shape, not the first
                again = candidate_set(index, imp, mask, creatives)
                assert candidate_set(index, imp, mask, creatives) is again
                assert _columns(again) == _columns(got)
    return seen


@pytest.mark.parametrize("campaigns", [200, 2000])
def test_the_array_set_is_the_index_list(campaigns: int) -> None:
    pf = portfolio.validate(
        synthetic.generate(campaigns, seed=3, creatives_per_campaign=5, now=NOW)
    )
    snapshot = ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=pf.campaigns,
        version=1,
        fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
    )
    pipeline = make_pipeline(0)
    pipeline.set_snapshot(snapshot)
    index = pipeline.index
    assert index is not None
    rng = random.Random(campaigns)
    raw = [typical_request(rng, n, 1 + n % 2) for n in range(60)] + [crowded_request(2)]
    requests = [msgspec.convert(r, BidRequest) for r in raw]
    assert _check(index, requests) > 100
    # an incremental update: one campaign's bid and creatives change (new positions, and
    # dead ones left behind)
    cs = list(snapshot.campaigns)
    cs[3] = replace(cs[3], max_bid_cpm_micros=cs[3].max_bid_cpm_micros + 1, version=9)
    cs[5] = replace(cs[5], creatives=cs[5].creatives[1:], version=9)
    assert pipeline.set_snapshot(replace(snapshot, campaigns=tuple(cs), version=2))
    updated = pipeline.index
    assert updated is not None and updated is not index and updated.dead_creatives > 0
    assert _check(updated, requests) > 100


def test_an_updated_index_selects_its_runs_in_row_order() -> None:
    """After an incremental update the changed campaigns' runs come after those of larger
    entries (their creatives at new positions, their entries kept): the compiled selection
    still gives each run whose entry is in the mask, in row order, as reading every run
    does, on the updated index's own shapes."""
    pf = portfolio.validate(synthetic.generate(300, seed=4, creatives_per_campaign=5, now=NOW))
    snapshot = ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=pf.campaigns,
        version=1,
        fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
    )
    cs = list(snapshot.campaigns)
    for i in (2, 150, 40):
        cs[i] = replace(cs[i], max_bid_cpm_micros=cs[i].max_bid_cpm_micros + 1, version=9)
    index = TargetingIndex(snapshot)
    by_id = {c.id: c for c in snapshot.campaigns}
    updated = apply_changes(index, by_id, replace(snapshot, campaigns=tuple(cs), version=2))
    assert updated is not None
    max_bid_col, _, id_col = updated.entry_columns()
    rng = random.Random(7)
    raw = [typical_request(rng, n, 1 + n % 2) for n in range(60)] + [crowded_request(2)]
    wallclock = NOW.timestamp()
    shapes = tails = 0
    for req in (msgspec.convert(r, BidRequest) for r in raw):
        view = request_view(req, personalize=True, wallclock=wallclock)
        mask = updated.request_mask(view, wallclock)
        creatives = updated.all_creatives & ~updated.blocked_creatives(req)
        for imp in req.imp:
            found = updated.imp_campaigns(imp, mask, creatives)
            laid = None if found is None else updated.eligible_positions(found[1])
            if found is None or laid is None:
                continue
            m, shape, _ = found
            runs = shape_runs(updated, shape, laid)
            entries = runs.entries
            shapes += 1
            tails += int(runs.word_rows[-1]) < len(entries)
            rows = [r for r, e in enumerate(entries.tolist()) if m >> e & 1]
            wanted = little_words(m.to_bytes(8 * len(runs.entry_words), "little"))
            args = (wanted, entries, runs.entry_words, runs.word_rows, max_bid_col, id_col)
            for got in (_bounds.select_runs(*args), python_select_runs(*args)):
                assert got[0].tolist() == rows
                assert got[1].tolist() == entries[rows].tolist()
                assert got[2].tolist() == max_bid_col[entries[rows]].tolist()
                assert got[3].tolist() == id_col[entries[rows]].tolist()
    assert shapes > 20 and tails > 10  # the moved runs are read after the bitmap's


def test_keyed_draws_are_their_own_stream() -> None:
    seed = 0x1234_5678_9ABC_DEF0
    keys = [draw_key(seed, j) for j in range(1000)]
    assert len(set(keys)) == 1000 and all(0 <= k < 1 << 64 for k in keys)
    u = np.asarray([unit(k) for k in keys])
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.05
    # not the exponentials' uniforms: the creative draw and the race's key are independent
    e = exponentials(seed, 1000)
    assert abs(np.corrcoef(u, np.exp(-e))[0, 1]) < 0.1
    assert draw_key(seed + 1, 0) != keys[0]


@pytest.mark.parametrize("priors", [False, True])
def test_a_group_bound_holds_for_each_of_its_positions(priors: bool) -> None:
    pipeline = make_pipeline(200, priors=priors)
    compiled = pipeline._compiled
    assert compiled is not None and compiled.scorer is not None
    scorer = compiled.scorer
    rng = np.random.default_rng(5)
    n = len(compiled.index.creatives)
    counts = rng.integers(1, 6, 300)
    starts = np.zeros(len(counts) + 1, dtype=np.intp)
    np.cumsum(counts, out=starts[1:])
    flat = rng.integers(0, n, int(starts[-1])).astype(np.intp)
    z0 = scorer.shared_sum(["a=1", "b=2"])
    groups = scorer.bound_groups(z0, flat, starts)
    each = scorer.bound(z0, flat)
    assert groups.shape == (len(counts), 2)
    for g in range(len(counts)):
        rows = each[starts[g] : starts[g + 1]]
        assert (groups[g] >= rows.max(axis=0)).all()
        assert (groups[g] == rows.max(axis=0)).all()  # and no looser than the largest
