"""Leniency as a class: the number/string/blank mix-ups real exchanges send, on real requests.

The base requests are the shared conformance corpus (``requests.jsonl.gz`` beside the project,
read in place, never copied; without it the test is skipped locally and fails in CI). For each
scalar in a request the test makes the mutations exchanges are seen to make: ``""``, ``" "``,
``null``, a number written as a string, an integer written as a float, a boolean as 0/1. A fixed
sample of them (seeded, bounded) goes through the pipeline with a catch-all portfolio, and:

- nothing is ever an internal error (what the endpoint would count as a 5xx);
- a request still valid in substance gets 200 or 204, never 400. Valid in substance: the
  mutation keeps the value (a number as a string, an integer as a float, a boolean as 0/1), or
  it blanks a field that is not in ``MAY_REFUSE_BLANK`` (written down here, apart from the
  decoder's own ``bidder.lenient.CRITICAL``, so that making a field critical cannot quietly
  make this test check less) or that the bidder does not read at all.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from bidder import lenient
from bidder.creative import NoPerformance
from bidder.openrtb import BidRequest
from bidder.options import PipelineSettings
from bidder.pipeline import Pipeline
from bidder.pricing import LogNormalMarket
from bidder.scoring import PriorModel
from fleet.config import Campaign, ConfigSnapshot
from fleet.portfolio import validate
from sim.portfolio import catch_all
from sim.vocabulary import FX_PER_USD_MICROS

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "conformance" / "requests.jsonl.gz"
SEED = 20261207
SAMPLES = 5000
NOON = datetime(2026, 11, 10, 12, tzinfo=UTC).timestamp()
BLANKS = ("", " ", None)
Path_ = tuple[str | int, ...]
# Fields whose blank value may be refused (400): reading it as absent would loosen a restriction
# (block lists, deal terms, privacy signals, sizes) or misprice a bid (floors, currencies, the
# auction type). imp.secure is not one: absent means "unknown" in the specification.
MAY_REFUSE_BLANK = frozenset(
    {
        ("BidRequest", "id"),
        ("BidRequest", "imp"),
        ("BidRequest", "at"),
        ("BidRequest", "cur"),
        ("BidRequest", "bcat"),
        ("BidRequest", "badv"),
        ("BidRequest", "bapp"),
        ("Imp", "id"),
        ("Imp", "bidfloor"),
        ("Imp", "bidfloorcur"),
        ("Imp", "pmp"),
        ("Banner", "format"),
        ("Banner", "w"),
        ("Banner", "h"),
        ("Banner", "battr"),
        ("Video", "battr"),
        ("Video", "mimes"),
        ("Video", "minduration"),
        ("Video", "maxduration"),
        ("Audio", "battr"),
        ("Native", "battr"),
        ("Format", "w"),
        ("Format", "h"),
        ("Pmp", "private_auction"),
        ("Pmp", "deals"),
        ("Deal", "id"),
        ("Deal", "bidfloor"),
        ("Deal", "bidfloorcur"),
        ("Deal", "at"),
        ("Deal", "wseat"),
        ("Deal", "wadomain"),
        ("Regs", "coppa"),
        ("Regs", "gdpr"),
        ("Regs", "us_privacy"),
        ("RegsExt", "gdpr"),
        ("RegsExt", "us_privacy"),
        ("Device", "lmt"),
    }
)


class _AllowAll:
    def allow(
        self, campaign: Campaign, price_cpm_micros: int, now: float, p_win: float = 1.0
    ) -> bool:
        return True


class _NeverSeen:
    def impressions(self, user_key: str, campaign_id: int, period_seconds: int) -> int | None:
        return 0

    def bid(self, user_key: str, campaign_id: int, periods: Sequence[int]) -> None:
        return None


def _pipeline() -> Pipeline:
    pf = validate(catch_all())
    snapshot = ConfigSnapshot(
        advertisers=pf.advertisers,
        campaigns=pf.campaigns,
        version=1,
        fx_per_usd_micros=dict(FX_PER_USD_MICROS),
    )
    pipeline = Pipeline(
        PipelineSettings(signing_key=b"corpus-signing-key-0123456789abcdef"),
        gate=_AllowAll(),
        frequency=_NeverSeen(),
        model=PriorModel(),
        market=LogNormalMarket(),
        performance=NoPerformance(),
        rng=random.Random(SEED),
    )
    pipeline.set_snapshot(snapshot)
    return pipeline


def _corpus() -> list[dict[str, Any]]:
    if not CORPUS.is_file():
        message = f"conformance corpus not found at {CORPUS}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [
        entry["request"]
        for entry in lines
        if entry.get("kind") == "valid" and isinstance(entry.get("request"), dict)
    ]


# -- where a scalar lives, in the request model -------------------------------------------------


_REQUEST_TYPE = mi.type_info(BidRequest)


def _field_of(path: Path_) -> tuple[str, str] | None:
    """(Struct name, field name) holding the scalar at ``path``, None where the bidder does not
    read it (an ``ext`` the model has no field for, an object kept as it is)."""
    t: mi.Type = _REQUEST_TYPE
    owner: tuple[str, str] | None = None
    for step in path:
        while isinstance(t, mi.UnionType):
            members = [m for m in t.types if not isinstance(m, mi.NoneType)]
            structured = [m for m in members if not isinstance(m, mi.StrType)]
            t = (structured or members)[0]
        if isinstance(step, int):
            if not isinstance(t, mi.ListType):
                return None
            t = t.item_type
            continue
        if not isinstance(t, mi.StructType):
            return None
        fields = {f.encode_name: f for f in t.fields}
        if step not in fields:
            return None
        owner = (t.cls.__name__, fields[step].name)
        t = fields[step].type
    return owner


def _scalars(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _scalars(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _scalars(v, (*path, i))
    elif value is not None:
        yield path, value


def _mutations(value: Any) -> list[tuple[str, Any]]:
    """(kind, new value): the blanks for any scalar, then what keeps the value."""
    out: list[tuple[str, Any]] = [("blank", b) for b in BLANKS]
    if isinstance(value, bool):
        out.append(("same", int(value)))
    elif isinstance(value, int):
        out += [("same", str(value)), ("same", float(value))]
    elif isinstance(value, float):
        out.append(("same", repr(value)))
    return out


def _set(request: dict[str, Any], path: Path_, new: Any) -> dict[str, Any]:
    out = copy.deepcopy(request)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return out


def _substance_kept(kind: str, field: tuple[str, str] | None) -> bool:
    return kind == "same" or field is None or field not in MAY_REFUSE_BLANK


def _handle(pipeline: Pipeline, request: dict[str, Any]) -> tuple[int, str, str]:
    answer = pipeline.handle(
        msgspec.json.encode(request), arrival=0.0, clock=lambda: 0.0, wallclock=NOON
    )
    return answer.status, answer.reason, answer.detail


def test_mutated_real_requests_are_read_leniently() -> None:
    requests = _corpus()
    pipeline = _pipeline()
    bases = [r for r in requests if _handle(pipeline, r)[0] in (200, 204)]
    assert len(bases) >= len(requests) * 0.9, "the unmutated corpus should pass first"
    candidates = [
        (i, path, kind, new)
        for i, request in enumerate(bases)
        for path, value in _scalars(request)
        for kind, new in _mutations(value)
    ]
    rng = random.Random(SEED)
    sample = rng.sample(candidates, min(SAMPLES, len(candidates)))
    refused: list[str] = []
    internal: list[str] = []
    checked = {"substance": 0, "other": 0}
    for i, path, kind, new in sample:
        mutated = _set(bases[i], path, new)
        status, reason, detail = _handle(pipeline, mutated)
        where = ".".join(str(p) for p in path)
        if reason == "internal":
            internal.append(f"{where} = {new!r}")
        field = _field_of(path)
        if _substance_kept(kind, field):
            checked["substance"] += 1
            if status not in (200, 204):
                refused.append(f"{where} = {new!r}: {status} {detail}")
        else:
            checked["other"] += 1
    assert not internal, f"{len(internal)} internal errors, e.g. {internal[:5]}"
    assert not refused, f"{len(refused)} of {checked['substance']} refused, e.g. {refused[:10]}"
    assert checked["substance"] > SAMPLES // 2  # the sample is mostly substance-keeping


def test_blank_critical_fields_are_still_refused_with_a_reason() -> None:
    """The other side of the line: a blank floor or block list is not a request to guess at."""
    pipeline = _pipeline()
    base = {
        "id": "r1",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.5}],
        "site": {"domain": "news.example.com"},
    }
    assert _handle(pipeline, base)[0] == 200
    for path, where in ((("imp", 0, "bidfloor"), "imp[0].bidfloor"), (("at",), "at")):
        for blank in ("", " "):
            status, _, detail = _handle(pipeline, _set(base, path, blank))
            assert status == 400 and detail.startswith(f"{where}: cannot read str"), detail
    # a blank currency is a currency we do not know: no bid, not a guess
    assert _handle(pipeline, _set(base, ("imp", 0, "bidfloorcur"), " "))[:2] == (204, "currency")
    for blank in ("", " "):
        status, _, _ = _handle(pipeline, _set(base, ("imp", 0, "secure"), blank))
        assert status == 200  # not critical: "unknown", as when absent


def test_no_field_is_critical_without_being_listed_here() -> None:
    assert lenient.CRITICAL <= MAY_REFUSE_BLANK, lenient.CRITICAL - MAY_REFUSE_BLANK


def test_the_field_map_follows_the_model() -> None:
    assert _field_of(("imp", 0, "bidfloor")) == ("Imp", "bidfloor")
    assert _field_of(("imp", 0, "banner", "format", 1, "w")) == ("Format", "w")
    assert _field_of(("regs", "ext", "gdpr")) == ("RegsExt", "gdpr")
    assert _field_of(("bcat", 2)) == ("BidRequest", "bcat")
    assert _field_of(("imp", 0, "ext", "prebid", "x")) is None
    assert _field_of(("imp", 0, "native", "request", "ver")) is None  # kept as it is
