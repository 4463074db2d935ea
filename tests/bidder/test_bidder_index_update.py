"""Incremental index updates: the same candidates as a full rebuild, the scorer's tables
extended for the new positions, and a full build when an update is not worth it."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence

import msgspec
import numpy as np
from msgspec.structs import replace
from perf_pipeline import NOW, crowded_request, typical_request

from bidder.creative import NoPerformance
from bidder.decoding import decode_request
from bidder.index_update import apply_changes
from bidder.pipeline import Pipeline, PipelineSettings
from bidder.pricing import LogNormalMarket
from bidder.scorer import StaticScorer
from bidder.scoring import (
    FeatureRow,
    HashedLinearModel,
    Model,
    PriorModel,
    cross_prefixes,
    cross_suffixes,
    static_features,
)
from bidder.targeting import TargetingIndex, request_view
from fleet import portfolio
from fleet.config import Campaign, ConfigSnapshot, Targeting
from sim import portfolio as synthetic
from sim import vocabulary as vocab

WALL = NOW.timestamp()


def _snapshot(count: int = 200) -> ConfigSnapshot:
    pf = portfolio.validate(synthetic.generate(count, seed=3, creatives_per_campaign=5, now=NOW))
    return ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=pf.campaigns,
        version=1,
        fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
    )


def _requests(count: int) -> list[bytes]:
    rng = random.Random(11)
    reqs = [typical_request(rng, i, rng.choice((1, 2))) for i in range(count)]
    return [json.dumps(r).encode() for r in [*reqs, crowded_request(2)]]


def _candidates(index: TargetingIndex, body: bytes) -> set[tuple[int, tuple[int, ...], str]]:
    req = decode_request(body)
    view = request_view(req, personalize=True, wallclock=WALL, exchange="x")
    mask = index.request_mask(view, WALL)
    creatives = index.all_creatives & ~index.blocked_creatives(req)
    out = set()
    for imp in req.imp:
        for c in index.candidates(imp, mask, creatives):
            ids = tuple(sorted(index.creatives[p].id for p in c.positions))
            out.add((c.entry.campaign.id, ids, c.deal.id if c.deal else ""))
    return out


def _changes(snapshot: ConfigSnapshot) -> ConfigSnapshot:
    """Retargeted, repriced, recreatived, paused, removed and new campaigns."""
    cs = list(snapshot.campaigns)
    broad = next(i for i, c in enumerate(cs) if not c.targeting.countries)
    cs[broad] = replace(
        cs[broad],
        targeting=replace(cs[broad].targeting, countries=("USA",), os=("ios",)),
        version=99,
    )
    cs[3] = replace(cs[3], goal_price_micros=cs[3].goal_price_micros * 3, version=99)
    cs[4] = replace(cs[4], creatives=cs[4].creatives[:2], version=99)  # fewer creatives
    cs[5] = replace(cs[5], status="paused", version=99)
    cs[6] = replace(cs[6], targeting=Targeting(), version=99)  # opened up entirely
    new = replace(
        cs[7],
        id=10_000,
        name="new",
        creatives=tuple(
            replace(cr, id=90_000 + k, campaign_id=10_000) for k, cr in enumerate(cs[7].creatives)
        ),
    )
    del cs[8]
    return replace(snapshot, campaigns=(*cs, new), version=2)


def test_an_update_answers_as_a_full_rebuild() -> None:
    before = _snapshot()
    after = _changes(before)
    old = TargetingIndex(before)
    old_answers = [_candidates(old, b) for b in _requests(300)]
    updated = apply_changes(old, {c.id: c for c in before.campaigns}, after)
    assert updated is not None and updated is not old
    rebuilt = TargetingIndex(after)
    differ = 0
    for body, was in zip(_requests(300), old_answers, strict=True):
        got = _candidates(updated, body)
        assert got == _candidates(rebuilt, body)
        assert _candidates(old, body) == was  # the old index still answers as before
        differ += got != was
    assert differ > 0
    touched = {c.id for c in after.campaigns if c.version == 99} | {before.campaigns[8].id}
    live = [old.entries[old.by_id[i]] for i in touched if i in old.by_id]
    assert len(live) >= 4 and updated.dead_creatives == sum(len(e.creatives) for e in live)
    # and updates chain
    again = replace(after, campaigns=after.campaigns[1:], version=3)
    chained = apply_changes(updated, {c.id: c for c in after.campaigns}, again)
    assert chained is not None
    fresh = TargetingIndex(again)
    for body in _requests(100):
        assert _candidates(chained, body) == _candidates(fresh, body)


def test_a_full_build_when_an_update_is_not_worth_it() -> None:
    before = _snapshot()
    old, by_id = TargetingIndex(before), {c.id: c for c in before.campaigns}
    fx = dict(before.fx_per_usd_micros, EUR=1)
    assert apply_changes(old, by_id, replace(before, fx_per_usd_micros=fx)) is None
    paused = replace(before.advertisers[0], status="paused")
    advertisers = (paused, *before.advertisers[1:])
    assert apply_changes(old, by_id, replace(before, advertisers=advertisers)) is None
    many = tuple(replace(c, version=5) for c in before.campaigns[:65])
    assert (
        apply_changes(old, by_id, replace(before, campaigns=many + before.campaigns[65:])) is None
    )
    assert apply_changes(old, by_id, before) is not None  # nothing changed: a cheap copy


def _model() -> HashedLinearModel:
    rng = np.random.default_rng(2)
    w = rng.normal(0.0, 0.5, 1 << 12).astype(np.float32)
    return HashedLinearModel(w, w[::-1].copy(), -3.0, -2.0, bits=12, version=1)


def _pipeline(model: Model) -> Pipeline:
    return Pipeline(
        PipelineSettings(signing_key=b"k" * 32),
        gate=_Allow(),
        frequency=_Seen(),
        model=model,
        market=LogNormalMarket(),
        performance=NoPerformance(),
        rng=random.Random(1),
    )


class _Allow:
    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        return True


class _Seen:
    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        return 0

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        return None


def test_the_pipeline_updates_its_index_and_scorer_incrementally() -> None:
    model, reference = _model(), _model()
    pipeline = _pipeline(model)
    before = _snapshot()
    assert pipeline.set_snapshot(before) is False  # the first is built
    after = _changes(before)
    assert pipeline.set_snapshot(after) is True
    # and again: a paused campaign back (a new number, its creatives first) and a change to an
    # earlier-numbered one (its creatives after those)
    cs = list(after.campaigns)
    cs[5] = replace(cs[5], status="active", version=100)
    cs[10] = replace(cs[10], goal_price_micros=cs[10].goal_price_micros + 7, version=100)
    assert pipeline.set_snapshot(replace(after, campaigns=tuple(cs), version=3)) is True
    compiled = pipeline._compiled
    assert compiled is not None and compiled.scorer is not None
    index = compiled.index
    back, changed = index.entries[index.by_id[cs[5].id]], index.entries[index.by_id[cs[10].id]]
    assert back.index > changed.index and back.first_creative < changed.first_creative
    assert len(compiled.goal_prices) == len(index.creatives) == len(compiled.scorer.static)
    suffixes = cross_suffixes(
        request_view(decode_request(_requests(1)[0]), personalize=True, wallclock=WALL), "com.x"
    )
    for i in index.by_id.values():  # every live position scores as the model itself
        e = index.entries[i]
        positions = list(range(e.first_creative, e.first_creative + len(e.creatives)))
        assert list(compiled.goal_prices[positions]) == [e.goal_price_micros] * len(positions)
        got = compiled.scorer.predict(["a=1"], positions, suffixes)
        want = reference.predict_crossed(
            ["a=1"],
            [static_features(e.campaign, cr) for cr in e.creatives],
            [cross_prefixes(e.campaign, cr) for cr in e.creatives],
            suffixes,
        )
        assert got == want
    for body in _requests(50):
        answer = pipeline.handle(body, arrival=0.0, clock=lambda: 0.0, wallclock=WALL)
        assert answer.outcome in ("bid", "nobid")
        for b in answer.bids:
            assert b.campaign_id in index.by_id


def _priors(snapshot: ConfigSnapshot) -> PriorModel:
    ids = [c.id for c in snapshot.campaigns]
    return PriorModel(
        click=0.02,
        install=0.05,
        per_goal={"CPC": (0.03, 0.0), "CPI": (0.01, 0.2)},
        per_campaign={ids[3]: (0.2, 0.3), ids[5]: (0.05, 0.5), ids[10]: (0.04, 0.1)},
        version=4,
    )


class _FromStrings:
    """The same priors seen as any model: scored from feature strings, per request."""

    def __init__(self, priors: PriorModel) -> None:
        self.priors = priors

    @property
    def version(self) -> int:
        return self.priors.version

    def predict(self, features: list[str]) -> tuple[float, float]:
        return self.priors.predict(features)

    def predict_batch(self, shared: list[str], rows: list[FeatureRow]) -> list[tuple[float, float]]:
        return self.priors.predict_batch(shared, rows)


def _three_snapshots() -> list[ConfigSnapshot]:
    before = _snapshot()
    after = _changes(before)
    cs = list(after.campaigns)
    cs[5] = replace(cs[5], status="active", version=100)
    cs[10] = replace(cs[10], goal_price_micros=cs[10].goal_price_micros + 7, version=100)
    return [before, after, replace(after, campaigns=tuple(cs), version=3)]


def test_priors_are_scored_by_position_through_incremental_updates() -> None:
    """A static model (the priors, until a learnt model arrives) is scored from per-position
    rates that incremental updates extend; the answers are exactly those of the same priors
    scored from feature strings on every request, with and without the early stop."""
    snapshots = _three_snapshots()
    priors = _priors(snapshots[0])
    by_position = _pipeline(priors)
    from_strings = _pipeline(_FromStrings(priors))
    everything = _pipeline(_FromStrings(priors))
    everything.settings = dataclasses.replace(everything.settings, early_stop=False)
    for k, snap in enumerate(snapshots):
        for p in (by_position, from_strings, everything):
            assert p.set_snapshot(snap) is (k > 0)
        compiled = by_position._compiled
        assert compiled is not None and isinstance(compiled.scorer, StaticScorer)
        assert from_strings._compiled is not None and from_strings._compiled.scorer is None
        index = compiled.index
        assert compiled.scorer.rates.shape == (len(index.creatives), 2)
        for i in index.by_id.values():
            e = index.entries[i]
            for k2, cr in enumerate(e.creatives):
                want = priors.predict(list(static_features(e.campaign, cr)))
                assert tuple(compiled.scorer.rates[e.first_creative + k2]) == want
        bids = 0
        for body in _requests(150):
            a, b, c = (
                p.handle(body, arrival=0.0, clock=lambda: 0.0, wallclock=WALL)
                for p in (by_position, from_strings, everything)
            )
            assert (a.status, a.body, a.outcome, a.reason) == (
                b.status,
                b.body,
                b.outcome,
                b.reason,
            )
            assert (a.status, a.body, a.outcome, a.reason) == (
                c.status,
                c.body,
                c.outcome,
                c.reason,
            )
            bids += a.outcome == "bid"
        assert bids > 20


def test_a_new_model_seed_after_updates_hashes_positions_in_their_order() -> None:
    """After incremental updates (positions no longer in entry order, dead ones among them), a
    model with another hash seed rehashes every position where it is."""
    snapshots = _three_snapshots()
    pipeline = _pipeline(_priors(snapshots[0]))
    for snap in snapshots:
        pipeline.set_snapshot(snap)
    rng = np.random.default_rng(5)
    w = rng.normal(0.0, 0.5, 1 << 12).astype(np.float32)
    model = HashedLinearModel(w, w[::-1].copy(), -3.0, -2.0, bits=12, version=2, seed=9)
    pipeline.set_model(model)
    compiled = pipeline._compiled
    assert compiled is not None and compiled.scorer is not None
    assert not isinstance(compiled.scorer, StaticScorer)
    index = compiled.index
    suffixes = cross_suffixes(
        request_view(decode_request(_requests(1)[0]), personalize=True, wallclock=WALL), "com.x"
    )
    for i in index.by_id.values():
        e = index.entries[i]
        positions = list(range(e.first_creative, e.first_creative + len(e.creatives)))
        got = compiled.scorer.predict(["a=1"], positions, suffixes)
        want = model.predict_crossed(
            ["a=1"],
            [static_features(e.campaign, cr) for cr in e.creatives],
            [cross_prefixes(e.campaign, cr) for cr in e.creatives],
            suffixes,
        )
        assert got == want


def test_a_campaign_with_more_creatives_than_the_arrays_take() -> None:
    # 60 creatives: runs past 52 bits are not exact in float64 sums; the index finds them one
    # campaign at a time instead, with the same answers
    snapshot = _snapshot()
    cs = list(snapshot.campaigns)
    c = cs[0]
    many = tuple(replace(c.creatives[k % len(c.creatives)], id=50_000 + k) for k in range(60))
    cs[0] = replace(c, creatives=many, targeting=Targeting())
    wide = TargetingIndex(replace(snapshot, campaigns=tuple(cs)))
    narrow = TargetingIndex(replace(snapshot, campaigns=tuple(cs[1:])))
    wide._eligible(wide.all_creatives)
    assert (
        wide._owner is None and narrow._eligible(narrow.all_creatives) and narrow._owner is not None
    )
    seen = 0
    for body in _requests(200):
        got = _candidates(wide, body)
        rest = {g for g in got if g[0] != c.id}
        assert rest == _candidates(narrow, body)
        mine = [g for g in got if g[0] == c.id]
        if mine:
            seen += 1
            assert len(mine[0][1]) % 12 == 0  # each of the 5 kinds of creative, 12 times
    assert seen > 0


def test_a_reread_snapshot_keeps_the_objects_of_unchanged_campaigns() -> None:
    """A snapshot read again (a portfolio file: new objects for every campaign, equal but for
    one changed and one removed) updates incrementally; the pipeline then holds the objects
    its index holds: the old ones of the unchanged campaigns, the new one of the changed."""
    first = _snapshot(120)
    pipeline = _pipeline(_model())
    assert not pipeline.set_snapshot(first)
    again = msgspec.convert(msgspec.to_builtins(first), ConfigSnapshot)
    cs = list(again.campaigns)
    assert cs[0] == first.campaigns[0] and cs[0] is not first.campaigns[0]
    cs[4] = replace(cs[4], max_bid_cpm_micros=cs[4].max_bid_cpm_micros + 7)
    gone = cs.pop(9).id
    assert pipeline.set_snapshot(replace(again, campaigns=tuple(cs), version=2))
    held = pipeline._campaigns
    assert gone not in held and len(held) == len(cs)
    assert held[cs[0].id] is first.campaigns[0]  # equal: the old object kept
    assert held[cs[4].id] is cs[4]
    index = pipeline.index
    assert index is not None
    for e in index.entries:
        if e.campaign.id in index.by_id and index.by_id[e.campaign.id] == e.index:
            assert held[e.campaign.id] is e.campaign
