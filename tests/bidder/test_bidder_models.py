"""bidder.models: which model files a bidder accepts, and the learnt market table behind the
pipeline's market model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bidder.models import LearntMarket, accept, refusal
from bidder.pricing import LogNormalMarket
from fleet import model as mf
from fleet.features import SCORING_FEATURE_SET, SCORING_FEATURE_SET_VERSION


def sparse(
    feature_set: str = SCORING_FEATURE_SET,
    feature_set_version: int = SCORING_FEATURE_SET_VERSION,
    market: mf.MarketTable | None = None,
) -> bytes:
    w = np.zeros(1 << 8, np.float32)
    w[[3, 77]] = [0.5, -1.25]
    return mf.encode_sparse(
        mf.SparseModel(
            version=42,
            bits=8,
            seed=0,
            feature_set=feature_set,
            feature_set_version=feature_set_version,
            click=mf.SparseHead.from_dense(-3.0, w),
            install=mf.SparseHead.from_dense(-2.0, np.zeros(1 << 8, np.float32)),
            market=market or mf.MarketTable(mf.MarketSegment(math.log(2e6), 0.4, 10.0)),
        )
    )


def test_a_model_of_the_bidders_feature_set_is_accepted_and_scores_as_the_reference() -> None:
    data = sparse()
    model, table = accept(data)
    assert model.version == 42 and table is not None
    feats = ["exchange=x", "country=US", "os=ios"]
    assert model.predict(feats) == mf.predict(mf.decode(data), feats)


@pytest.mark.parametrize(
    ("name", "version"), [("another.set", SCORING_FEATURE_SET_VERSION), (SCORING_FEATURE_SET, 99)]
)
def test_a_model_of_another_feature_set_is_refused_with_the_reason(name: str, version: int) -> None:
    data = sparse(name, version)
    why = refusal(mf.decode(data))
    assert why is not None and name in why and str(version) in why
    with pytest.raises(mf.ModelFormatError, match="feature set"):
        accept(data)


def test_a_version_1_file_names_no_feature_set_and_is_accepted() -> None:
    dense = mf.ModelFile(
        bits=4,
        seed=0,
        version=3,
        click_bias=-4.0,
        install_bias=-3.0,
        weights=np.zeros((2, 16), np.float32),
    )
    model, table = accept(mf.encode(dense))
    assert model.version == 3 and table is None


def test_the_market_is_the_fallback_until_a_table_then_the_table() -> None:
    fallback = LogNormalMarket(prior_median_micros=1_000_000, prior_sigma=1.0)
    market = LearntMarket(fallback)
    assert market.p_win("2|x|US|300x250", 1_000_000) == pytest.approx(0.5)
    assert market.params("s") == fallback.params("s")
    table = mf.MarketTable(
        mf.MarketSegment(math.log(2e6), 0.5, 100.0),
        {"2|x|US|300x250": mf.MarketSegment(math.log(4e6), 0.25, 50.0)},
    )
    market.table = table
    assert market.p_win("2|x|US|300x250", 4_000_000) == pytest.approx(0.5)
    assert market.p_win("unknown", 2_000_000) == pytest.approx(0.5)
    assert market.params("2|x|US|300x250") == (math.log(4e6), 0.25)
    # notices still reach the in-process model; they do not move the learnt table
    before = fallback.params("2|x|US|300x250")
    market.observe_loss("2|x|US|300x250", 9_000_000)
    assert fallback.params("2|x|US|300x250") != before
    assert market.params("2|x|US|300x250") == (math.log(4e6), 0.25)
