"""The group commit against real Postgres: the notices of one batch are answered together (one
future per batch), each key's result goes to its first copy, and a notice Postgres refuses
fails alone: the others of its batch are committed and answered."""

from __future__ import annotations

import asyncio

import pytest
from conftest_tracker import NOW, seed, tracker_world

from tracker.batch import NoticeRow, RowResult
from tracker.errors import Unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await seed(pg_dsn)
    return pg_dsn


def bill(txid: str) -> list[NoticeRow]:
    return [NoticeRow("bill", txid, 1, 11, 2_500_000, "USD", NOW)]


async def test_one_batch_answers_each_notice_and_a_bad_one_fails_alone(dsn: str) -> None:
    async with tracker_world(dsn, lanes=(0,)) as world:
        submit = world.committer.submit
        # submitted before the commit task runs: one batch of four
        good, twice, bad, other = await asyncio.gather(
            submit(bill("g:1:a")),
            submit(bill("g:1:a")),
            submit(bill("g:1:\x00")),  # text Postgres refuses: the batch fails, then each alone
            submit(bill("g:2:a")),
            return_exceptions=True,
        )
        assert good == {("g:1:a", "bill"): RowResult(True, 2_500)}
        assert twice == {("g:1:a", "bill"): RowResult(False)}  # its first copy counted it
        assert isinstance(bad, Unavailable) and "cannot be committed" in str(bad)
        assert other == {("g:2:a", "bill"): RowResult(True, 2_500)}
        assert world.value("tracker_batch_errors_total", reason="data") == 2  # batch, then alone
        again = await submit(bill("g:1:a"))  # a later batch: already counted
        assert again == {("g:1:a", "bill"): RowResult(False)}
        spent = await world.pool.fetchval("SELECT sum(spent_micros) FROM campaign_spend")
        assert spent == 5_000
