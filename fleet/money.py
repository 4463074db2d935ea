"""Money is integer micro-units of a currency: 1 unit = 1_000_000 micros. Never floats in spend.

OpenRTB prices are CPM floats on the wire; they are converted at the edge and nowhere else.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000


def parse_amount(value: object) -> int:
    """Exact micros from a decimal string, int or float as a person writes money ("12.50")."""
    if isinstance(value, bool):
        raise ValueError("a money amount cannot be a boolean")
    if isinstance(value, int):
        return value * MICROS_PER_UNIT
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a money amount: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not a money amount: {value!r}")
    micros = (d * MICROS_PER_UNIT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(micros)


def cpm_to_micros(cpm: float) -> int:
    """A CPM price (currency units per 1000 impressions) as micros per 1000 impressions."""
    return round(cpm * MICROS_PER_UNIT)


def micros_to_cpm(micros: int) -> float:
    return micros / MICROS_PER_UNIT


def impression_cost_micros(cpm_micros: int) -> int:
    """What one impression costs at a CPM given in micros (integer division; never rounds up)."""
    return cpm_micros // 1000


def decimal_string(micros: int) -> str:
    """Exact decimal text of an amount ("12.5", "3.0"): what parse_amount reads back."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{f'{frac:06d}'.rstrip('0') or '0'}"


def format_micros(micros: int, currency: str = "") -> str:
    """For people: thousands separators, two decimals at least ("1,250.50 USD")."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole:,}.{digits} {currency}".strip()
