"""How much data the demo's learning aim needs: the learner's excess log loss over the truth, as
a share of the best constant's (``sim.learning``'s definition, the demo report's), after N
impressions, for N = the demo's volume and multiples of it.

The stream is the demo's market, not a stand-in: the simulator's market and population
(``sim.demo.build_market``, the default settings and seed), its requests (``sim.traffic``:
the same OpenRTB bytes the exchange sends), the demo's portfolio (``sim.portfolio.generate``
with the demo's cap), and the bidder's own path to features: ``decode_request``, its traffic
filter, privacy decision (``decide``), ``request_view``, targeting index (``request_mask``,
``candidates``) and ``features_for`` (every cross, the campaign x segment crosses where privacy
allows). Each impression goes to one eligible campaign and creative drawn uniformly (the demo's
bidder picks by value under pacing; this keeps the mix of campaigns independent of the model
being measured), its label is drawn from the truth (``Market.p_click``).

Impressions arrive at the demo's density: ``demo`` impressions a simulated day, so a stream of
k x ``demo`` impressions spans k simulated days (flights and dayparting are checked on the
first day's clock, the features and the truth see the real one). The learner is the demo's:
``LearnerSettings`` with the demo's defaults (``sim.learning.fleet_defaults``), its estimator
grid (compiled FTRL), warm start from the priors, hashing as the bidder hashes; it learns in
steps of ``STEP`` impressions (a demo exports a model every few seconds: about that many) and
after each step picks its estimator as the running learner does. Every impression is scored
before it is learnt (progressive validation) by the estimator chosen at the time.

For each N, the share is measured on the last quarter of the first N impressions (the demo
measures the last quarter of its day), with a 95 % bootstrap interval over those impressions,
and the two oracle bounds of the report (``sim.learning.oracle_shares``) on the same
impressions (a random sample of at most ``BOUND_SAMPLE``: the bounds do not depend on N).

Run: ``python -m bench.learner --volume`` (2.4 M impressions for the default ladder: about
7 minutes on a loaded 2-core machine, stopping at ``--deadline`` seconds with what it reached;
``--multiples 1,3,10`` takes about a minute; ``--demo`` changes the day's volume).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bidder.decoding import decode_request
from bidder.errors import BidderError
from bidder.filters import TrafficFilter
from bidder.privacy import ConsentCache, decide
from bidder.scoring import features_for
from bidder.settings import BidderSettings
from bidder.targeting import TargetingIndex, request_view
from fleet.config import ConfigSnapshot
from fleet.settings import load
from learner.batch import to_batch
from learner.grid import log_losses
from learner.online import OnlineLearner
from learner.settings import LearnerSettings
from sim import learning
from sim import portfolio as synthetic
from sim import vocabulary as vocab
from sim.demo import build_market, cap_the_broadest
from sim.market import Market
from sim.settings import SimSettings
from sim.traffic import Traffic

DAY: Final = 86_400.0
STEP: Final = 1000  # impressions between two choices of the estimator (a demo's export)
BOUND_SAMPLE: Final = 20_000
# a 150 s demo's day (`make run`, seed 1): about 7,000 billed impressions, 50-70 clicks
DEMO_IMPRESSIONS: Final = 7_000
MULTIPLES: Final = (1, 3, 10, 30, 100)
START: Final = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, midnight UTC


@dataclasses.dataclass(frozen=True, slots=True)
class Stream:
    """What the measurement keeps of each impression, in arrival order."""

    p: npt.NDArray[np.float64]  # the truth
    y: npt.NDArray[np.float64]  # the drawn label
    q: npt.NDArray[np.float64]  # the learner's progressive prediction
    users: npt.NDArray[np.int64]
    personal: npt.NDArray[np.bool_]
    campaigns: npt.NDArray[np.int64]


class ImpressionSource:
    """The demo's requests through the bidder's decoding, privacy, targeting and features."""

    def __init__(self, seed: int, demo: int, campaigns: int = 20) -> None:
        environ: dict[str, str] = {"RTBFLEET_SIM_SEED": str(seed)}
        self.sim = load(SimSettings, environ, env_file=None)
        self.market: Market = build_market(self.sim)
        self.traffic = Traffic(
            self.market,
            random.Random(f"{seed}:traffic"),
            gzip_share=0.0,  # the bytes a bidder decodes after gunzip are the same
            ortb25_share=self.sim.ortb25_share,
            default_tmax_ms=self.sim.default_tmax_ms,
        )
        document = synthetic.generate(campaigns, seed=seed, now=START)
        cap_the_broadest(document)
        from fleet import portfolio

        loaded = portfolio.validate(document)
        snapshot = ConfigSnapshot(
            advertisers=loaded.advertisers,
            campaigns=loaded.campaigns,
            version=1,
            fx_per_usd_micros=dict(vocab.FX_PER_USD_MICROS),
        )
        self.index = TargetingIndex(snapshot)
        bidder = load(BidderSettings, {}, env_file=None)
        ps = bidder.to_pipeline_settings()
        self.filter = TrafficFilter(
            ps.crawler_ua_patterns,
            ps.datacenter_cidrs,
            ps.blocked_publishers,
            ps.reject_incomplete_schain,
        )
        self.vendor_id = self.sim.vendor_id
        self.consent = ConsentCache(size=1 << 16)  # a bidder process meets every user in a day
        self.start = START.timestamp()
        self.spacing = DAY / demo
        self.rng = random.Random(f"{seed}:volume")
        self.offered = 0

    def impression(self, i: int) -> tuple[list[str], float, int, bool, int] | None:
        """The ``i``-th request's first imp as an impression: (features, true p(click), user,
        personalised, campaign), or None when the bidder would not bid on it."""
        sim_ts = self.start + i * self.spacing
        day_clock = self.start + (i * self.spacing) % DAY  # flights and dayparting
        request = self.traffic.request(sim_ts)
        self.offered += 1
        try:
            req = decode_request(request.body)
        except BidderError:
            return None
        if self.filter.check(req) is not None or not req.imp:
            return None
        privacy = decide(req, self.vendor_id, self.consent)
        view = request_view(req, personalize=privacy.personalize, wallclock=sim_ts)
        mask = self.index.request_mask(view, day_clock)
        creatives = self.index.all_creatives & ~self.index.blocked_creatives(req)
        imp = req.imp[0]
        candidates = self.index.candidates(imp, mask, creatives)
        if not candidates:
            return None
        chosen = candidates[self.rng.randrange(len(candidates))]
        position = chosen.positions[self.rng.randrange(len(chosen.positions))]
        campaign, creative = chosen.entry.campaign, self.index.creatives[position]
        opp = request.opportunity
        p = self.market.p_click(opp, opp.slots[0], campaign.id, creative.id)
        features = features_for(view, campaign, creative, imp)
        return features, p, opp.user.index, privacy.personalize, campaign.id


def learner_of_the_demo() -> OnlineLearner:
    """The learner as a demo runs it: its settings with the demo's defaults."""
    environ: dict[str, str] = {}
    learning.fleet_defaults(environ)
    return OnlineLearner(load(LearnerSettings, environ, env_file=None).to_config())


def run(
    total: int, demo: int, seed: int, deadline_s: float | None = None
) -> tuple[Stream, ImpressionSource]:
    """``total`` impressions of the demo's market, learnt progressively (stops early, with
    fewer, at ``deadline_s`` seconds)."""
    source = ImpressionSource(seed, demo)
    learner = learner_of_the_demo()
    grid = learner.grids["click"]
    hash_seed = learner.config.seed
    labels_rng = np.random.default_rng([seed, 77])
    select_rng = np.random.default_rng([seed, 78])
    p = np.empty(total)
    y = np.empty(total)
    q = np.empty(total)
    users = np.empty(total, dtype=np.int64)
    personal = np.empty(total, dtype=bool)
    campaigns = np.empty(total, dtype=np.int64)
    started = time.monotonic()
    n, i = 0, 0
    while n < total:
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            break
        step: list[list[str]] = []
        a = n
        while len(step) < STEP and n < total:
            found = source.impression(i)
            i += 1
            if found is None:
                continue
            features, p[n], users[n], personal[n], campaigns[n] = found
            step.append(features)
            n += 1
        y[a:n] = labels_rng.random(n - a) < p[a:n]
        batch = to_batch(step, y[a:n].tolist(), [1.0] * (n - a), hash_seed)
        preds = grid.learn(batch.hashes, batch.offsets, batch.labels, batch.weights)
        q[a:n] = preds[grid.chosen]
        grid.select(select_rng)
    return Stream(p[:n], y[:n], q[:n], users[:n], personal[:n], campaigns[:n]), source


def measure(stream: Stream, n: int, market: Market, seed: int) -> dict[str, Any]:
    """The share on the last quarter of the first ``n`` impressions, its interval, the
    oracle bounds on (a sample of) the same impressions, and the clicks ``n`` carried."""
    a = (3 * n) // 4
    p, q = stream.p[a:n], stream.q[a:n]
    excess, constant = learning._excess(p, q)
    rng = np.random.default_rng([seed, n])
    sample = np.arange(a, n)
    if len(sample) > BOUND_SAMPLE:
        sample = np.sort(rng.choice(sample, BOUND_SAMPLE, replace=False))
    bounds = learning.oracle_shares(
        stream.p[sample],
        stream.users[sample],
        stream.personal[sample],
        stream.campaigns[sample],
        market,
    )
    return {
        "impressions": n,
        "clicks": int(stream.y[:n].sum()),
        "last_quarter_clicks": int(stream.y[a:n].sum()),
        "share": excess / constant if constant > 0 else float("nan"),
        "interval": learning.share_interval(p, q, rng),
        "log_loss": float(log_losses(q, stream.y[a:n]).mean()),
        "bounds": bounds,
        "bound_sample": len(sample),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.learner --volume")
    parser.add_argument("--volume", action="store_true", help="(this measurement)")
    parser.add_argument("--demo", type=int, default=DEMO_IMPRESSIONS, help="a demo's impressions")
    parser.add_argument(
        "--multiples", default=",".join(map(str, MULTIPLES)), help="of the demo's volume"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds at most")
    args = parser.parse_args(argv)
    try:
        multiples = sorted({float(x) for x in args.multiples.split(",") if x.strip()})
    except ValueError:
        print("--multiples: numbers separated by commas", file=sys.stderr)
        return 2
    if args.demo < 8 or not multiples or multiples[0] <= 0:
        print("--demo must be at least 8 and every multiple positive", file=sys.stderr)
        return 2
    ladder = [max(8, round(args.demo * m)) for m in multiples]
    started = time.monotonic()
    stream, source = run(ladder[-1], args.demo, args.seed, args.deadline)
    seconds = time.monotonic() - started
    print(
        f"learner by volume: the demo's market (seed {args.seed}), {len(stream.p):,} impressions "
        f"of {source.offered:,} requests in {seconds:.0f} s; {args.demo:,} impressions a "
        f"simulated day (x1); the demo's learner settings, estimator chosen every {STEP}"
    )
    print(
        "  share: last-quarter excess log loss over the truth / the best constant's "
        f"(aim <= {learning.AIM:.0%}); bounds: oracles of everything but the user's interests"
    )
    print(
        f"  {'x demo':>7} {'impressions':>12} {'clicks':>8} {'last q.':>8} {'share':>6} "
        f"{'95 % interval':>14}   {'no user':>7} {'segments':>8}"
    )
    for m, n in zip(multiples, ladder, strict=True):
        if n > len(stream.p):
            print(f"  {m:>7g} {n:>12,}   not reached within the deadline")
            continue
        r = measure(stream, n, source.market, args.seed)
        b = r["bounds"]
        low, high = r["interval"]
        print(
            f"  {m:>7g} {n:>12,} {r['clicks']:>8,} {r['last_quarter_clicks']:>8,} "
            f"{r['share']:>6.0%} {f'{low:.0%}-{high:.0%}':>14}   "
            f"{b['without_user']:>7.0%} {b['with_segments']:>8.0%}"
        )
    print("  (the intervals: how precisely each quarter's impressions measure it, one stream)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
