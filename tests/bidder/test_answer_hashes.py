"""The bidder's answers on the bench's request mix are the recorded ones (answer_hashes.py)."""

from __future__ import annotations

import json

from answer_hashes import FIXTURE, digests


def test_answers_match_the_recorded_digests() -> None:
    recorded = json.loads(FIXTURE.read_text())
    assert digests() == recorded, (
        "the bidder answers differently: if on purpose, rerun "
        "tests/bidder/answer_hashes.py --write and say why in the commit"
    )


def test_the_early_stop_answers_as_pricing_every_candidate() -> None:
    """Every answer, body and event of the three pipelines is the same whether pricing stops
    early (bidder.race) or prices every candidate: the early stop changes no answer."""
    assert digests(early_stop=False) == digests()


def test_the_lazy_path_answers_as_doing_every_candidate_first() -> None:
    """The same with the caps read and the creative chosen for every candidate before the
    race, and every candidate priced (the keyed creative draws are the same either way)."""
    lazy = digests()
    assert digests(early_stop=False, lazy=False) == lazy
    assert digests(lazy=False) == lazy
