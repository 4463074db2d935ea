"""The tracker's handler against real Postgres and memcached: exactly-once spend, refusals,
clicks, frequency counters, Postgres cut off and back."""

from __future__ import annotations

import asyncio
from datetime import date
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest
from conftest_tracker import (
    NOW,
    OLD_KEY,
    TcpProxy,
    notice_query,
    proxied_dsn,
    seed,
    tracker_world,
)
from pymemcache.client.base import Client

from fleet.events import BillingEvent, ClickEvent, LossEvent, WinEvent
from fleet.frequency import counter_key
from tracker.attribution import click_id_for
from tracker.spend import campaign_cost
from tracker.store import purge

pytestmark = pytest.mark.integration


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await seed(pg_dsn)
    return pg_dsn


async def spend(dsn: str) -> dict[tuple[int, date], tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT campaign_id, day, spent_micros, impressions FROM campaign_spend_daily"
        )
    finally:
        await conn.close()
    return {(r["campaign_id"], r["day"]): (r["spent_micros"], r["impressions"]) for r in rows}


async def test_a_billing_notice_twice_is_counted_once(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        q = notice_query("bill", "r1:1:b0", price="2.5")
        first, second = await w.get("/bill", q), await w.get("/bill", q)
        assert (first.status, second.status) == (204, 204) and w.tracker.ready
        assert await spend(dsn) == {(1, date(2027, 1, 15)): (2_500, 1)}
        assert w.value("tracker_duplicates_total", kind="bill") == 1
        assert w.value("tracker_notices_total", kind="bill", outcome="counted") == 1
        billing = [e for e in w.events if isinstance(e, BillingEvent)]
        assert len(billing) == 1 and billing[0].cost_micros == 2_500
        assert billing[0].txid == "r1:1:b0"


async def test_spend_is_converted_to_the_campaign_currency_on_its_day(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        at = NOW + 7 * 3600 + 60  # 00:01 of the next day in Tokyo
        q = notice_query(
            "bill", "r2:1:b0", campaign=2, creative=20, price="2.777777", expires=NOW + 86400
        )
        assert (await w.get("/bill", q, now=at)).status == 204
        expected = campaign_cost(2_777_777, 1_000_000, 920_000)
        assert await spend(dsn) == {(2, date(2027, 1, 16)): (expected, 1)}


async def test_refusals_are_answered_and_counted_by_cause_and_move_no_money(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        good = notice_query("bill", "r3:1:b0")
        cases = {
            "forged": good.split("&sig=")[0],
            "altered": good.replace("cid=1", "cid=2"),
            "wrong_path": notice_query("win", "r3:1:b0"),
            "price_above_bid": notice_query("bill", "r3:1:b0", price="3.000001"),
            "price_missing": notice_query("bill", "r3:1:b0", price=None),
            "price_invalid": notice_query("bill", "r3:1:b0", price="2.5e0"),
        }
        for cause, query in cases.items():
            response = await w.get("/bill", query)
            assert response.status in (400, 403), cause
            assert w.value("tracker_refusals_total", cause=cause) == 1, cause
        expired = await w.get("/bill", good, now=NOW + 3600)
        assert expired.status == 403 and w.value("tracker_refusals_total", cause="expired") == 1
        empty = notice_query("bill", "r3:1:b0", price="")
        assert (await w.get("/bill", empty)).status == 400
        assert w.value("tracker_price_missing_total", kind="bill") == 2
        assert await spend(dsn) == {}
        assert (await w.get("/nowhere", good)).status == 404
        assert (await w.tracker.handle("DELETE", "/bill", good, {}, b"", NOW)).status == 405


async def test_a_notice_signed_with_the_previous_key_still_counts(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        assert (await w.get("/bill", notice_query("bill", "r4:1:b0", key=OLD_KEY))).status == 204
        assert sum(s for s, _ in (await spend(dsn)).values()) == 2_500


async def test_copies_through_two_trackers_at_once_count_once(dsn: str) -> None:
    async with tracker_world(dsn) as a, tracker_world(dsn) as b:
        queries = [notice_query("bill", f"r5:{i}:b0", price="1.000001") for i in range(150)]
        calls = [t.get("/bill", q) for q in queries for t in (a, b, a)]
        answers = await asyncio.gather(*calls)
        assert {r.status for r in answers} == {204}
        counted = sum(
            w.value("tracker_notices_total", kind="bill", outcome="counted") for w in (a, b)
        )
        assert counted == 150
        assert await spend(dsn) == {(1, date(2027, 1, 15)): (150 * 1_000, 150)}
        # the batches really were groups
        assert a.value("tracker_batch_notices_count") < 300


async def test_postgres_cut_off_answers_503_and_nothing_counts_twice(pg_dsn: str) -> None:
    await seed(pg_dsn)
    parts = urlsplit(pg_dsn)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.start()
    try:
        async with tracker_world(proxied_dsn(pg_dsn, proxy.port), timeout=1.0) as w:
            q = notice_query("bill", "r6:1:b0")
            assert (await w.get("/bill", q)).status == 204
            proxy.cut()
            down = await w.get("/bill", notice_query("bill", "r6:2:b0"))
            assert down.status == 503 and ("Retry-After", "1") in down.headers
            again = await w.get("/bill", q)
            assert again.status == 503
            assert w.value("tracker_notices_total", kind="bill", outcome="unavailable") == 2
            proxy.restore()
            # the exchange retries both until answered (after the fail-fast moment), then again
            for query in (notice_query("bill", "r6:2:b0"), q):
                for _ in range(100):
                    if (await w.get("/bill", query)).status == 204:
                        break
                    await asyncio.sleep(0.05)
                assert (await w.get("/bill", query)).status == 204
        assert await spend(pg_dsn) == {(1, date(2027, 1, 15)): (5_000, 2)}
    finally:
        await proxy.close()


async def test_win_answers_the_markup_with_rebuilt_urls_and_the_price(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        response = await w.get("/win", notice_query("win", "r7:1:b0", price="1.25"))
        assert response.status == 200
        html = response.body.decode()
        assert "<!--1.25-->" in html
        imp = html.split('<img src="')[2].split('"')[0]
        assert imp.startswith("http://tracker.test/imp?ev=imp&")
        assert (await w.get("/imp", urlsplit(imp).query)).status == 200
        wins = [e for e in w.events if isinstance(e, WinEvent)]
        assert wins[0].clear_cpm_micros == 1_250_000 and wins[0].bid_cpm_micros == 3_000_000
        assert w.value("tracker_notices_total", kind="imp", outcome="counted") == 1


async def test_a_click_is_recorded_and_redirected_with_its_click_id(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        q = notice_query("click", "r8:1:b0", price=None, user_key="u42")
        response = await w.get("/click", q)
        assert response.status == 302
        location = dict(response.headers)["Location"]
        click_id = click_id_for("r8:1:b0", b"integration-user-key-secret-000000")
        assert dict(parse_qsl(urlsplit(location).query)) == {
            "camp": "1",
            "dev": "u42",
            "clickid": click_id,
        }
        assert (await w.get("/click", q)).status == 302  # clicked twice: one click
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT click_id, user_key, campaign_id FROM tracker_clicks")
        finally:
            await conn.close()
        assert [tuple(r) for r in rows] == [(click_id, "u42", 1)]
        assert [e.click_id for e in w.events if isinstance(e, ClickEvent)] == [click_id]
        # a creative without a click-through URL: counted, nowhere to go
        other = notice_query(
            "click", "r8:2:b0", campaign=2, creative=20, currency="USD", price=None
        )
        assert (await w.get("/click", other)).status == 204


async def test_the_first_impression_or_billing_counts_each_frequency_cap_once(
    dsn: str, memcached: tuple[str, int]
) -> None:
    async with tracker_world(dsn, memcached) as w:
        for txid in ("r9:1:b0", "r9:2:b0"):
            assert (await w.get("/imp", notice_query("imp", txid, user_key="u7"))).status == 200
            assert (await w.get("/imp", notice_query("imp", txid, user_key="u7"))).status == 200
            assert (await w.get("/bill", notice_query("bill", txid, user_key="u7"))).status == 204
        # billed without a pixel: counted on the billing notice
        assert (await w.get("/bill", notice_query("bill", "r9:3:b0", user_key="u7"))).status == 204
        # no user key: nothing to count
        assert (await w.get("/imp", notice_query("imp", "r9:4:b0"))).status == 200
        assert w.frequency is not None
        await w.frequency.drain()
        client = Client(memcached)
        try:
            counts = client.get_many([counter_key(1, p, "u7") for p in (3600, 86400)])
        finally:
            client.close()
        assert sorted(int(v) for v in counts.values()) == [3, 3]
        assert w.value("tracker_frequency_increments_total", outcome="done") == 6
        assert w.value("tracker_frequency_increments_total", outcome="no_user_key") == 1


async def test_a_campaign_created_after_start_is_read_when_its_first_notice_comes(
    dsn: str,
) -> None:
    async with tracker_world(dsn) as w:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """INSERT INTO campaigns (id, advertiser_id, name, goal_type, goal_price_micros,
                       max_bid_cpm_micros, daily_budget_micros, total_budget_micros, currency)
                   VALUES (3, 1, 'new', 'CPM', 1000000, 5000000, 0, 0, 'GBP');
                   INSERT INTO creatives (id, campaign_id, format, w, h, markup, adomain)
                   VALUES (30, 3, 'banner', 300, 250, 'x', '{acme.example}')"""
            )
        finally:
            await conn.close()
        q = notice_query("bill", "n1:1:b0", campaign=3, creative=30, price="1")
        assert (await w.get("/bill", q)).status == 204
        unknown = notice_query("bill", "n2:1:b0", campaign=4, creative=40)
        response = await w.get("/bill", unknown)
        assert response.status == 400 and b"unknown" in response.body
        assert await spend(dsn) == {(3, date(2027, 1, 15)): (790, 1)}


async def test_a_loss_notice_carries_its_reason_and_the_winning_price(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        q = notice_query("loss", "l1:1:b0", price="4.5").replace("${AUCTION_LOSS}", "102")
        assert (await w.get("/loss", q)).status == 204
        assert (await w.get("/loss", q)).status == 204
        losses = [e for e in w.events if isinstance(e, LossEvent)]
        assert [(e.loss_reason, e.clear_cpm_micros) for e in losses] == [(102, 4_500_000)]
        assert await spend(dsn) == {}


async def test_a_rate_gone_since_the_catalog_was_read_refuses_the_notice_alone(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO fx_rates (currency, per_usd_micros) VALUES ('XTS', 2000000)"
        )
        async with tracker_world(dsn) as w:
            await conn.execute("DELETE FROM fx_rates WHERE currency = 'XTS'")
            gone = notice_query("bill", "x1:1:b0", currency="XTS")
            fine = notice_query("bill", "x2:1:b0")
            answers = await asyncio.gather(w.get("/bill", gone), w.get("/bill", fine))
            assert [a.status for a in answers] == [400, 204]
            assert w.value("tracker_refusals_total", cause="unknown") == 1
        kinds = await conn.fetch("SELECT txid FROM tracker_notices WHERE kind = 'bill'")
        assert [r["txid"] for r in kinds] == ["x2:1:b0"]
    finally:
        await conn.close()


async def test_dedupe_rows_past_their_retention_are_purged(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        assert (await w.get("/bill", notice_query("bill", "p1:1:b0"), now=NOW)).status == 204
        later = notice_query("bill", "p2:1:b0", expires=NOW + 10_000)
        assert (await w.get("/bill", later, now=NOW + 5000)).status == 204
        assert await purge(w.pool, NOW + 1000) == 1
        assert await purge(w.pool, NOW + 1000) == 0
        # spend is kept: only the dedupe rows of notices no URL can bring again are gone
        assert await spend(dsn) == {(1, date(2027, 1, 15)): (5_000, 2)}
