"""Importing one bidder module loads what it needs, not the whole pipeline."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("bidder", ("bidder.pipeline", "bidder.scoring", "msgspec")),
        ("bidder.openrtb", ("bidder.pipeline", "bidder.targeting", "bidder.lenient")),
        ("bidder.decoding", ("bidder.pipeline", "bidder.targeting")),
        ("bidder.scorer", ("bidder.pipeline", "bidder.pricing", "bidder.offers")),
        ("bidder.outcome", ("bidder.pipeline", "bidder.scoring", "bidder.pricing")),
        ("bidder.settings", ("bidder.pipeline", "bidder.scoring", "prometheus_client")),
        ("fleet.model", ("bidder", "prometheus_client")),
    ],
)
def test_a_module_does_not_load_the_pipeline(module: str, absent: tuple[str, ...]) -> None:
    code = (
        f"import sys, {module}\n"
        f"loaded = [m for m in {absent!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"
