from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.money import (
    cpm_to_micros,
    decimal_string,
    format_micros,
    impression_cost_micros,
    parse_amount,
)


@pytest.mark.parametrize(
    ("text", "micros"),
    [("12.50", 12_500_000), (3, 3_000_000), ("0.000001", 1), (" 7 ", 7_000_000), (0.1, 100_000)],
)
def test_parse_amount_is_exact(text: object, micros: int) -> None:
    assert parse_amount(text) == micros


@pytest.mark.parametrize("bad", ["", "abc", "1,5", "nan", "inf", True])
def test_parse_amount_rejects_non_amounts(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(bad)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_decimal_string_round_trips(micros: int) -> None:
    assert parse_amount(decimal_string(micros)) == micros


@given(st.lists(st.integers(min_value=1, max_value=50_000_000), max_size=500))
def test_summed_impression_costs_have_no_float_drift(cpms: list[int]) -> None:
    total = sum(impression_cost_micros(c) for c in cpms)
    exact = sum(Decimal(c) / 1000 for c in cpms)
    assert 0 <= exact - total < len(cpms) or not cpms  # floor per impression, never more


def test_cpm_conversion_and_formatting() -> None:
    assert cpm_to_micros(1.23) == 1_230_000
    assert format_micros(1_250_500_000, "USD") == "1,250.50 USD"
    assert format_micros(-1) == "-0.000001"
