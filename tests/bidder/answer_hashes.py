"""A digest of the bidder's answers on the bench's request mix, to show a refactoring kept them.

    .venv/bin/python tests/bidder/answer_hashes.py            # print the digests
    .venv/bin/python tests/bidder/answer_hashes.py --write    # record them as the fixture
    .venv/bin/python tests/bidder/answer_hashes.py --priced-all  # and compare with doing all

Every answer's status, body, outcome, no-bid reason, events (msgpack, as on the event bus)
and opportunities (each imp's candidate campaign ids, which the pacing link counts) are
hashed, request by request, under a fixed seed, a fixed wall clock and a frozen monotonic
clock (so nothing is ever late and every latency is 0). The requests are the bench's mix
(``bench.bidder.request_mix``), the in-process perf requests (``perf_pipeline``) and a handful
of broken bodies (the 400 and no-bid paths). Three pipelines answer them: the perf pipeline
(a hashed linear model through the compiled scorer), the same with ``nobid_body`` and
``use_nurl``, and one scoring with priors.

``tests/bidder/test_answer_hashes.py`` compares the digests with
``tests/bidder/fixtures/answer_hashes.json``; a change of behaviour made on purpose rewrites the
fixture with ``--write`` in the same commit, and says why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

if __name__ == "__main__":  # run as a script: the repository root, for bench/
    sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from perf_pipeline import NOW, crowded_request, make_pipeline, typical_request

from bench.bidder import request_mix
from bidder.creative import NoPerformance
from bidder.pipeline import Pipeline
from bidder.pricing import LogNormalMarket
from bidder.scoring import PriorModel
from fleet import events

FIXTURE = Path(__file__).parent / "fixtures" / "answer_hashes.json"
ARRIVAL = 1000.0
BROKEN: tuple[bytes, ...] = (
    b"",
    b"{",
    b"[]",
    b'{"imp": [{"id": "1"}]}',
    b'{"id": "x", "imp": []}',
    b'{"id": "x", "imp": [{"id": "1", "bidfloor": -1, "banner": {"w": 300, "h": 250}}]}',
    b'{"id": "x", "imp": [{"id": "1"}, {"id": "1"}]}',
    b'{"id": "x", "imp": [{"id": "1", "banner": {"w": "wide"}}]}',
    b'{"id": "x", "imp": [{"id": "1", "bidfloor": "0.5", "banner": {"w": "300", "h": 250}}]}',
    b'{"id": "x", "site": {}, "app": {}, "imp": [{"id": "1"}]}',
    b'{"id": "x", "tmax": 5, "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}',
    b'{"id": 7, "tmax": "90", "imp": [{"id": 1, "banner": {"w": 300.0, "h": 250}}]}',
)


def _variants(body: bytes, n: int) -> dict[str, object]:
    """One of the no-bid paths for a bench request: a crawler, another currency, a floor no
    campaign meets, consent missing under GDPR, COPPA, no user at all, two imps."""
    req = json.loads(body)
    kind = n % 7
    if kind == 0:
        req["device"]["ua"] = "Mozilla/5.0 (compatible; Googlebot/2.1)"
    elif kind == 1:
        req["cur"] = ["JPY"]
    elif kind == 2:
        req["imp"][0]["bidfloor"] = 500.0
    elif kind == 3:
        req["regs"] = {"gdpr": 1}
    elif kind == 4:
        req["regs"] = {"coppa": 1}
    elif kind == 5:
        req.pop("user", None)
        req["device"].pop("ifa", None)
    else:
        req["imp"].append({**req["imp"][0], "id": "2"})
    return dict(req)


def bodies() -> Iterator[bytes]:
    mix = [body for body, _ in request_mix(1500)]
    yield from mix
    for n, body in enumerate(mix[:350]):
        yield json.dumps(_variants(body, n)).encode()
    rng = random.Random(7)
    for at in (2, 1):
        for i in range(300):
            yield json.dumps(typical_request(rng, i, at)).encode()
        yield json.dumps(crowded_request(at)).encode()
    yield from BROKEN


def pipelines(*, early_stop: bool = True, lazy: bool = True) -> dict[str, Pipeline]:
    """The three pipelines; ``early_stop=False`` prices every candidate (bidder.race's
    reference), ``lazy=False`` reads the caps and chooses the creative of every candidate
    before the race (bidder.imp_offers' reference): both must answer exactly as the early
    stop and the lazy path do."""
    linear = make_pipeline()
    variant = make_pipeline()
    variant.settings = dataclasses.replace(variant.settings, nobid_body=True, use_nurl=True)
    priors = make_pipeline()
    for p in (linear, variant, priors):
        p.settings = dataclasses.replace(p.settings, early_stop=early_stop)
        p.lazy = lazy
    priors.set_model(PriorModel(click=0.02, install=0.05, version=3))
    priors._market = LogNormalMarket()
    priors._performance = NoPerformance()
    return {"linear": linear, "nobid_body+use_nurl": variant, "priors": priors}


def digest(pipeline: Pipeline, requests: list[bytes]) -> str:
    h = hashlib.sha256()
    for body in requests:
        answer = pipeline.handle(
            body, arrival=ARRIVAL, clock=lambda: ARRIVAL, wallclock=NOW.timestamp()
        )
        h.update(f"{answer.status}|{answer.outcome}|{answer.nbr}|{answer.reason}|".encode())
        h.update(answer.body)
        for event in answer.events:
            h.update(events.encode(event))
        for ids in answer.opportunities:
            h.update(b"|" + ids.astype("<i8").tobytes())
        h.update(b"\n")
    return h.hexdigest()


def digests(*, early_stop: bool = True, lazy: bool = True) -> dict[str, str]:
    requests = list(bodies())
    chosen = pipelines(early_stop=early_stop, lazy=lazy)
    return {name: digest(p, requests) for name, p in chosen.items()}


def main() -> None:
    result = digests()
    print(json.dumps(result, indent=2))
    if "--priced-all" in sys.argv[1:]:
        same = digests(early_stop=False, lazy=False) == result
        print(
            "every candidate's caps, creative and price first (early_stop=False, lazy=False) "
            f"gives the same digests: {same}"
        )
    if "--write" in sys.argv[1:]:
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {FIXTURE.name}")


if __name__ == "__main__":
    main()
