"""sim.learning: the model against the truth in the last quarter, the win rate per hour."""

from __future__ import annotations

import numpy as np

from sim import learning
from sim.calibration import Prediction
from sim.ledger import WON, AuctionTable


def table(
    t_sim: list[float], p_click: list[float], bid: list[int], won: list[bool]
) -> AuctionTable:
    n = len(t_sim)
    return AuctionTable(
        {
            "req": np.arange(n),
            "t_sim": np.asarray(t_sim, dtype=np.float64),
            "p_click": np.asarray(p_click, dtype=np.float32),
            "bid_usd_micros": np.asarray(bid, dtype=np.int64),
            "outcome": np.asarray([WON if w else 0 for w in won], dtype=np.int8),
            "campaign_id": np.ones(n, dtype=np.int64),
        }
    )


def test_only_the_last_quarter_counts_and_a_perfect_model_meets_the_aim() -> None:
    truth = [0.01, 0.05, 0.02, 0.08]
    t = table([0.0, 100.0, 800.0, 900.0], truth, [1, 1, 1, 1], [True, False, True, True])
    index = {f"r{i}": i for i in range(4)}
    preds = [Prediction(f"r{i}:1:b", "1", 1, truth[i], 0.0, 3 if i >= 2 else 0) for i in range(4)]
    out = learning.last_quarter(preds, index, t, sim_seconds=1000.0)
    assert isinstance(out, dict)
    assert out["joined"] == 2 and out["learnt_models"] == [3]
    assert abs(out["excess_log_loss"]) < 1e-6 and out["constant_excess"] > 0
    assert out["aim_met"]


def test_a_constant_model_misses_the_aim() -> None:
    truth = [0.01, 0.2, 0.01, 0.2]
    t = table([800.0, 850.0, 900.0, 950.0], truth, [1] * 4, [False] * 4)
    index = {f"r{i}": i for i in range(4)}
    mean = float(np.mean(truth))
    preds = [Prediction(f"r{i}:1:b", "1", 1, mean, 0.0, 1) for i in range(4)]
    out = learning.last_quarter(preds, index, t, sim_seconds=1000.0)
    assert isinstance(out, dict) and not out["aim_met"]
    assert out["excess_share_of_constant"] is not None
    assert abs(out["excess_share_of_constant"] - 1.0) < 1e-3
    assert isinstance(learning.last_quarter([], index, t, 1000.0), str)


def test_win_rate_per_simulated_hour() -> None:
    t = table([10.0, 20.0, 3700.0, 7300.0, 7400.0], [0.0] * 5, [5, 5, 5, 0, 5], [1, 0, 1, 0, 0])
    assert learning.win_rate_by_hour(t, 3 * 3600.0) == [0.5, 1.0, 0.0]
    lines = learning.summary_lines(
        {"model_last_quarter": "not measured: x", "win_rate_by_hour": [0.5, None]}
    )
    assert lines == ["Learning  not measured: x", "Win rate  per simulated hour: 50% -"]


def test_learning_curve_and_first_price_win_rate_per_hour() -> None:
    truth = [0.01, 0.2, 0.01, 0.2]
    t = table([10.0, 20.0, 5500.0, 5600.0], truth, [1_000_000] * 4, [True, False, True, True])
    t.columns["auction_type"] = np.asarray([1, 1, 1, 2], dtype=np.int8)
    t.columns["floor_usd_micros"] = np.zeros(4, dtype=np.int64)
    t.columns["market_median_usd_micros"] = np.full(4, 1_000_000, dtype=np.int64)
    index = {f"r{i}": i for i in range(4)}
    mean = float(np.mean(truth[:2]))

    def pred(i: int, q: float, version: int, p_win: float) -> Prediction:
        return Prediction(
            f"r{i}:1:b",
            "1",
            1,
            q,
            0.0,
            version,
            p_win,
            value_cpm_micros=3_000_000,
            bid_cpm_micros=1_000_000,
        )

    preds = [
        pred(0, mean, 2, 0.5),  # a constant in hour 0
        pred(1, mean, 2, 0.7),
        pred(2, 0.01, 5, 0.9),  # the truth in hour 1
        pred(3, 0.2, 5, 0.1),  # second price: not in the first-price line
    ]
    f = learning.figures(preds, index, t, 2 * 3600.0)
    c = f["curve_by_hour"]
    assert [h["joined"] for h in c] == [2, 2] and [h["model"] for h in c] == [2, 5]
    assert abs(c[0]["excess_share_of_constant"] - 1.0) < 1e-3
    assert abs(c[1]["excess_share_of_constant"]) < 1e-3
    shape = learning.MarketParams()
    q0 = shape.no_competition_share
    at_median = q0 + (1 - q0) * 0.5  # a bid at the true median
    hour0, hour1 = f["first_price_by_hour"]
    assert hour0[:3] == [0.5, 0.6, at_median] and hour1[:3] == [1.0, 0.9, at_median]
    assert hour0[3] == hour1[3] and at_median < hour0[3] < 1.0  # worth 3x the median: bid more
    assert f["model_last_quarter"]["first_model"] == 2
    lines = learning.summary_lines(f)
    assert "began with model 2 of an earlier run" in lines[0]
    assert lines[1].endswith("per simulated hour: 100% 0%")
    assert lines[3].startswith("Win rate  first price, won") and lines[3].endswith("50% 100%")
    assert lines[4].endswith("60% 90%")


def test_the_target_is_the_surplus_maximising_bid_against_the_true_market() -> None:
    shape = learning.MarketParams()
    rng = np.random.default_rng(4)
    n = 50
    value = rng.uniform(0.2e6, 8e6, n)
    median = rng.uniform(0.3e6, 3e6, n)
    floor = np.where(rng.random(n) < 0.5, 0.0, 0.1 * value)
    target = learning.optimal_p_win(value, floor, median, shape)
    for i in range(n):
        bids = np.linspace(max(floor[i], 1.0), value[i], 4000, endpoint=False)
        p = learning.true_p_win(
            bids, np.full_like(bids, floor[i]), np.full_like(bids, median[i]), shape
        )
        surplus = (value[i] - bids) * p
        best = bids[int(np.argmax(surplus))]
        # the target's P(win) is that of a bid within a grid step of the finest optimum
        step = (value[i] - max(floor[i], 1.0)) / 256
        near = learning.true_p_win(
            np.asarray([best - step, best + step]),
            np.full(2, floor[i]),
            np.full(2, median[i]),
            shape,
        )
        assert near[0] - 1e-9 <= target[i] <= near[1] + 1e-9
    below = learning.true_p_win(np.asarray([0.5e6]), np.asarray([1e6]), np.asarray([1e6]), shape)
    assert below[0] == 0.0


def test_the_aim_needs_the_user_x_campaign_term() -> None:
    """An oracle that knows every term of the true p(click) but the user's latent interests
    keeps more than half of a constant's excess: a model of the bidder's features (which do not
    cross the user's segments with the campaign) cannot meet the aim however much it learns."""
    import random

    from sim.market import Market, MarketParams

    market = Market(MarketParams(users=3000), seed=1)
    share = learning.oracle_share_without_user(market, random.Random(3), 3000)
    assert learning.AIM < share < 1.0


def test_the_share_s_interval_holds_it_and_narrows_with_more_bids() -> None:
    rng = np.random.default_rng(7)
    widths = []
    for n in (2_000, 20_000):
        p = 1 / (1 + np.exp(-rng.normal(-4.6, 0.8, n)))
        q = np.clip(p * np.exp(rng.normal(0.0, 0.5, n)), 1e-6, 0.5)
        excess, constant = learning._excess(p, q)
        low, high = learning.share_interval(p, q, np.random.default_rng(0))
        assert low < excess / constant < high
        widths.append(high - low)
    assert widths[1] < 0.5 * widths[0]


def test_a_day_that_overshoots_by_seconds_has_24_hours() -> None:
    t = table([10.0, 86_400.5], [0.0, 0.0], [5, 5], [True, False])
    assert learning.win_rate_by_hour(t, 86_400.9) == [1.0] + [None] * 22 + [0.0]
    assert len(learning.win_rate_by_hour(t, 86_400.0 + 120.0)) == 25


def test_the_report_s_oracle_bounds_on_bids_of_the_market() -> None:
    """``oracle_bounds`` on rows as the exchange records them (truth, user, privacy, campaign):
    knowing the segments where they may be used beats knowing nothing of the user, which keeps
    about what ``oracle_share_without_user`` says; where no segment may be used, both agree."""
    import random

    from sim.market import Market, MarketParams
    from sim.sizing import personalised

    market = Market(MarketParams(users=3000), seed=1)
    rng = random.Random(5)
    cols: dict[str, list[float]] = {k: [] for k in ("p_click", "user", "personal", "campaign_id")}
    while len(cols["user"]) < 2500:
        opp = market.draw(rng, 1.7e9 + rng.random() * 86_400.0)
        if opp.user.crawler:
            continue
        c = rng.randrange(1, 21)
        cols["p_click"].append(market.p_click(opp, opp.slots[0], c, c * 10 + rng.randrange(3)))
        cols["user"].append(opp.user.index)
        cols["personal"].append(int(personalised(opp)))
        cols["campaign_id"].append(c)
    n = len(cols["user"])
    t = AuctionTable(
        {
            "req": np.arange(n),
            "p_click": np.asarray(cols["p_click"], dtype=np.float32),
            "user": np.asarray(cols["user"], dtype=np.int64),
            "personal": np.asarray(cols["personal"], dtype=np.int8),
            "campaign_id": np.asarray(cols["campaign_id"], dtype=np.int64),
        }
    )
    rows = np.arange(n, dtype=np.int64)
    b = learning.oracle_bounds(t, rows, market)
    assert b is not None
    assert 0.4 < b["without_user"] < 0.75
    assert 0.0 < b["with_segments"] < 0.9 * b["without_user"]
    assert 0.5 < b["personal_share"] < 1.0
    t.columns["personal"][:] = 0  # no segment may be used: nothing beyond the average
    none = learning.oracle_bounds(t, rows, market)
    assert none is not None and none["with_segments"] == none["without_user"]
    lines = learning.summary_lines(
        {
            "model_last_quarter": {
                "excess_log_loss": 0.005,
                "constant_excess": 0.007,
                "excess_share_of_constant": 0.7,
                "aim_met": False,
                "learnt_models": [1],
                "bounds": b,
            },
            "win_rate_by_hour": [],
        }
    )
    assert (
        lines[1].startswith("Learning  bounds on the same bids")
        and "knowing its segments" in lines[1]
    )
