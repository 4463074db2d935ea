"""The learner against Vowpal Wabbit ``--ftrl`` on the same synthetic clicks, in the same run.

Data: ``learner.synthetic.ClickWorld``, a known true click probability (logistic in per-value
effects plus campaign x app and campaign x country interactions, base rate about 1 %), with the
bidder's feature strings (the crosses as features, as the bidder sends them). Both learners get
the same strings, hash bits, alpha, beta, l1 and l2, one pass, predicting each example before
learning it (progressive validation).

- Vowpal Wabbit reads a text file with its native parser (``-d``, the fastest way to feed it;
  its parser runs in a thread of its own); its time is the whole run, parsing included, the
  better of two runs. Its progressive predictions come from a third run with ``-p`` (untimed:
  writing them costs VW several times its learning) and are scored here like ours.
- Ours: the feature strings are hashed (``learner.batch.to_batch``, MurmurHash3 as the bidder
  hashes them) and learnt in batches by the compiled FTRL; the time includes the hashing, the
  better of two runs.

Prints examples/s ours over VW (aim >= 1.0), progressive log loss vs VW (aim: within 1 %),
each one's excess over the truth's log loss (aim: ours no further), bytes per hash slot per
estimator (aim <= 16), the exported model's size, and the bidder's scoring cost per candidate
with the exported model (aim < 5 us). Timings on a shared machine are rough; the ratios are
measured in one run.

Run: ``python -m bench learner`` (about a minute). ``python -m bench.learner --volume``: the
learning curve by volume on the demo's own market (``bench.learning_volume``).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np

from bidder.scorer import PositionScorer, PositionTables
from bidder.scoring import HashedLinearModel, cross_pairs
from fleet.model import encode_sparse
from learner.batch import to_batch
from learner.ftrl import FtrlParams
from learner.grid import log_losses
from learner.online import LearnerConfig, OnlineLearner
from learner.synthetic import ClickWorld, SyntheticClicks, constant_log_loss

EXAMPLES: Final = int(os.environ.get("RTBFLEET_BENCH_LEARNER_EXAMPLES", "400000"))
PARAMS: Final = FtrlParams(alpha=0.1, beta=1.0, l1=1.0, l2=1.0, bits=20)
BATCH: Final = 8192


class Timer:
    """Wall-clock and CPU seconds (this process, all threads) of a block: on a machine shared
    with other work, CPU time is the steadier of the two."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_ours(data: SyntheticClicks) -> tuple[Timer, np.ndarray, OnlineLearner]:
    """(time, progressive predictions, a learner holding the trained estimator)."""
    # no warm start (priors of 0.5 put the bias at 0): VW's weights start at 0 too
    learner = OnlineLearner(
        LearnerConfig(
            click_grid=(PARAMS,), install_grid=(PARAMS,), click_prior=0.5, install_prior=0.5
        )
    )
    est = learner.grids["click"].estimators[0]
    preds = np.empty(len(data.features))
    with Timer() as t:
        for a in range(0, len(data.features), BATCH):
            b = min(a + BATCH, len(data.features))
            batch = to_batch(data.features[a:b], data.y[a:b])
            preds[a:b] = est.learn(batch.hashes, batch.offsets, batch.labels, batch.weights)
    return t, preds, learner


def run_grid(data: SyntheticClicks, estimators: int, pool: Executor | None = None) -> float:
    """Seconds for a grid of ``estimators`` on the same stream (hashed once), validation
    included; with a thread pool, the estimators learn each batch in parallel."""
    grid = tuple(
        FtrlParams(alpha=PARAMS.alpha * (1.5**k), beta=1.0, l1=1.0, l2=1.0, bits=PARAMS.bits)
        for k in range(estimators)
    )
    learner = OnlineLearner(LearnerConfig(click_grid=grid, install_grid=(PARAMS,)), pool=pool)
    g = learner.grids["click"]
    started = time.perf_counter()
    for a in range(0, len(data.features), BATCH):
        b = min(a + BATCH, len(data.features))
        batch = to_batch(data.features[a:b], data.y[a:b])
        g.learn(batch.hashes, batch.offsets, batch.labels, batch.weights)
    return time.perf_counter() - started


def run_vw(data: SyntheticClicks, workdir: Path) -> tuple[Timer, np.ndarray, int] | None:
    """(time, progressive predictions, bytes per weight), or None without VW."""
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return None
    path, preds_path = workdir / "train.vw", workdir / "preds.txt"
    with open(path, "w") as f:
        for features, y in zip(data.features, data.y.tolist(), strict=True):
            f.write(("1" if y > 0 else "-1") + " |f " + " ".join(features) + "\n")
    args = [
        "--ftrl",
        f"--ftrl_alpha={PARAMS.alpha}",
        f"--ftrl_beta={PARAMS.beta}",
        f"--l1={PARAMS.l1}",
        f"--l2={PARAMS.l2}",
        f"-b{PARAMS.bits}",
        "--loss_function=logistic",
        "--link=logistic",
        "--holdout_off",
        "--quiet",
        f"-d{path}",
    ]
    # timed without writing predictions (-p costs VW several times its learning time)
    best: Timer | None = None
    for _ in range(2):
        with Timer() as t:
            vw = Workspace(arg_list=args)  # runs the whole file through
        vw.finish()
        best = t if best is None or t.cpu < best.cpu else best
    vw = Workspace(arg_list=[*args, f"-p{preds_path}"])
    stride = int(vw.get_stride())
    vw.finish()
    preds = np.loadtxt(preds_path, dtype=np.float64)
    assert best is not None
    return best, preds, stride * 4


def scoring_cost(model: HashedLinearModel, rng: random.Random) -> tuple[float, float]:
    """Microseconds per candidate: the bid path's PositionScorer (warm tables) and the
    reference ``predict`` of each candidate's full feature list (hashing every string)."""
    campaigns, creatives = 60, 4
    statics, prefixes = [], []
    for c in range(campaigns):
        for k in range(creatives):
            cr = c * creatives + k
            statics.append((f"campaign={c}", f"creative={cr}", "goal=CPC", "fmt=banner"))
            # the last prefix takes each of the request's segments (bidder.scoring.cross_pairs)
            prefixes.append((f"campaign^app={c}^", f"campaign^country={c}^", f"campaign^seg={c}^"))
    scorer = PositionScorer(model, PositionTables(statics, prefixes, model.seed))
    positions = list(range(len(statics)))
    requests = []
    for _ in range(400):
        app, country = rng.randrange(2000), rng.randrange(30)
        shared = [
            f"country={country}",
            f"os={rng.randrange(3)}",
            f"dt={rng.randrange(4)}",
            f"app={app}",
            f"pub={rng.randrange(300)}",
            f"hour={rng.randrange(24)}",
        ]
        segments = sorted({f"seg-{rng.randrange(40):03d}" for _ in range(rng.randrange(9))})
        shared += [f"seg={s}" for s in segments]
        requests.append((shared, (str(app), str(country), *segments)))
    for shared, suffixes in requests:  # warm the tables, as a running bidder has them
        scorer.predict(shared, positions, suffixes)
    started = time.perf_counter()
    for shared, suffixes in requests:
        scorer.predict(shared, positions, suffixes)
    warm = (time.perf_counter() - started) / (len(requests) * len(positions)) * 1e6
    sample = requests[:20]
    started = time.perf_counter()
    for shared, suffixes in sample:
        for st, pre in zip(statics, prefixes, strict=True):
            model.predict([*shared, *st, *cross_pairs(pre, suffixes)])
    full = (time.perf_counter() - started) / (len(sample) * len(positions)) * 1e6
    return warm, full


def main() -> None:
    rng = np.random.default_rng(2026)
    world = ClickWorld(rng, base_rate=0.01)
    data = world.draw(rng, EXAMPLES)
    n = len(data.features)
    truth, constant = data.true_log_loss(), constant_log_loss(data.y)
    print(
        f"learner: {n:,} synthetic examples, {len(data.features[0])} features each, "
        f"base rate {data.base_rate:.3%}; FTRL {PARAMS.describe()}"
    )
    ours_t, ours_p, learner = run_ours(data)
    again = run_ours(data)[0]  # the better of two runs, as for VW
    ours_t = again if again.cpu < ours_t.cpu else ours_t
    ours_ll = float(log_losses(ours_p, data.y).mean())
    with tempfile.TemporaryDirectory(prefix="rtbfleet-bench-learner-") as tmp:
        vw = run_vw(data, Path(tmp))
    print(f"  log loss: truth {truth:.5f}   constant {constant:.5f}")
    print(
        f"  ours     : {n / ours_t.wall:>10,.0f} examples/s ({n / ours_t.cpu:,.0f} per CPU s)"
        f"   progressive log loss {ours_ll:.6f}"
    )
    if vw is None:
        print("  Vowpal Wabbit: not installed (pip install vowpalwabbit); no baseline")
    else:
        vw_t, vw_p, vw_bytes = vw
        vw_ll = float(log_losses(np.clip(vw_p, 0.0, 1.0), data.y).mean())
        print(
            f"  VW --ftrl: {n / vw_t.wall:>10,.0f} examples/s ({n / vw_t.cpu:,.0f} per CPU s)"
            f"   progressive log loss {vw_ll:.6f}"
        )
        print(
            f"  examples/s ours / VW: {vw_t.wall / ours_t.wall:.2f} wall-clock, "
            f"{vw_t.cpu / ours_t.cpu:.2f} CPU time   (aim >= 1.0)"
        )
        print(f"  progressive log loss ours / VW: {ours_ll / vw_ll:.5f}   (aim within 1 %)")
        ours_x, vw_x = ours_ll - truth, vw_ll - truth
        verdict = "no further" if ours_x <= vw_x * 1.001 else "further"
        print(
            f"  excess over the truth's log loss: ours {ours_x:.6f}, VW {vw_x:.6f}, constant "
            f"{constant - truth:.6f}   (ours {verdict} than VW, within 0.1 %; aim: no further)"
        )
        print(f"  VW bytes per weight: {vw_bytes}")
    est = learner.grids["click"].estimators[0]
    print(
        f"  bytes per hash slot per estimator: {est.nbytes / ((1 << PARAMS.bits) + 1):.1f}"
        "   (aim <= 16)"
    )
    grid_s = run_grid(data, 4)
    with ThreadPoolExecutor(2) as pool:
        threaded_s = run_grid(data, 4, pool)
    print(
        f"  grid of 4 estimators, hashed once, with validation: {n / grid_s:,.0f} examples/s"
        f" ({4 * n / grid_s:,.0f} estimator-examples/s); {n / threaded_s:,.0f} examples/s"
        " with 2 threads"
    )
    model = learner.export(version=1)
    data_bytes = encode_sparse(model)
    dense = (2 * 4 << PARAMS.bits) + 32
    print(
        f"  exported model (sparse, version 2): {len(data_bytes):,} bytes, "
        f"{model.nonzero:,} non-zero weights (dense version 1: {dense:,} bytes)"
    )
    hashed = HashedLinearModel(
        model.click.dense(model.bits),
        model.install.dense(model.bits),
        model.click.bias,
        model.install.bias,
        bits=model.bits,
        seed=model.seed,
    )
    warm, full = scoring_cost(hashed, random.Random(3))
    print(
        f"  bidder scoring per candidate with the exported model: {warm:.2f} us on the bid"
        f" path (PositionScorer, warm), {full:.2f} us hashing every feature (aim < 5 us)"
    )
    print("  (timings from a shared, loaded machine: rough; the ratios are from one run)")


if __name__ == "__main__":
    if "--volume" in sys.argv[1:]:  # how much data the demo's aim needs (bench.learning_volume)
        from bench.learning_volume import main as volume

        raise SystemExit(volume(sys.argv[1:]))
    main()
