"""Postbacks and attribution against real Postgres, and the cost-per-activation rule's pauses."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import asyncpg
import pytest
from conftest_tracker import NOW, SECRET, notice_query, seed, tracker_world

from fleet import signing
from fleet.config import Campaign, Creative
from fleet.db.config_store import load_snapshot, upsert
from fleet.events import InAppEvent, InstallEvent
from fleet.portfolio import load_document
from tracker.attribution import click_id_for
from tracker.cpa import Rule
from tracker.pauses import PAUSED_BY, CpaRule

pytestmark = pytest.mark.integration
IFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await seed(pg_dsn)
    return pg_dsn


def postback(event: str = "install", **params: str) -> str:
    return urlencode({"partner": "simmmp", "event": event, "event_ts": "123.000", **params})


async def test_every_attribution_rule(dsn: str) -> None:
    device = signing.user_key(IFA, SECRET)
    async with tracker_world(dsn) as w:
        # a click with the device's user key, in campaign 1 (7-day window)
        q = notice_query("click", "a1:1:b0", price=None, user_key=device)
        assert (await w.get("/click", q)).status == 302
        click_id = click_id_for("a1:1:b0", SECRET)

        async def send(query: str, at: float) -> dict[str, object]:
            response = await w.get("/postback", query, now=at)
            assert response.status == 200, response.body
            result: dict[str, object] = json.loads(response.body)
            return result

        # 1. by click id (no device id at all)
        by_id = await send(postback(clickid=click_id, app="app.one"), NOW + 60)
        assert (by_id["rule"], by_id["campaign_id"]) == ("click_id", 1)
        # the same install again: counted once per device and app
        assert (await send(postback(clickid=click_id, app="app.one"), NOW + 70))["status"] == (
            "duplicate"
        )
        # 2. by the device's last click, within the window
        last = await send(postback(ifa=IFA.lower(), app="app.two"), NOW + 3600)
        assert (last["rule"], last["campaign_id"]) == ("last_click", 1)
        # 3. outside the window: organic
        late = await send(postback(ifa=IFA, app="app.three"), NOW + 8 * 86400)
        assert (late["rule"], late["attributed"]) == ("organic", False)
        # 4. a device that never clicked: organic
        organic = await send(postback(ifa="another-device", app="app.one"), NOW + 60)
        assert organic["rule"] == "organic"
        # in-app events follow the install of their app
        purchase = postback(
            "purchase", ifa=IFA, app="app.two", revenue_micros="4990000", currency="EUR"
        )
        assert (await send(purchase, NOW + 7200))["attributed"] is True
        assert (await send(purchase, NOW + 7300))["status"] == "duplicate"
        organic_event = postback("registration", ifa="another-device", app="app.one")
        assert (await send(organic_event, NOW + 100))["attributed"] is False

    installs = [e for e in w.events if isinstance(e, InstallEvent)]
    assert [(e.rule, e.attributed, e.click_id) for e in installs] == [
        ("click_id", True, click_id),
        ("last_click", True, click_id),
        ("organic", False, ""),
        ("organic", False, ""),
    ]
    assert installs[0].txid == "a1:1:b0" and installs[2].txid.startswith("organic:u")
    assert all(IFA.lower() not in repr(e).lower() for e in w.events)
    events = [e for e in w.events if isinstance(e, InAppEvent)]
    assert [(e.name, e.attributed, e.revenue_micros, e.currency) for e in events] == [
        ("purchase", True, 4_990_000, "EUR"),
        ("registration", False, 0, "USD"),
    ]
    assert w.value("tracker_attributions_total", event="install", outcome="duplicate") == 1
    assert w.value("tracker_attributions_total", event="install", outcome="organic") == 2


async def test_a_postback_echoing_our_click_url_finds_its_click(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        q = notice_query("click", "a2:1:b0", price=None, campaign=2, creative=20)
        assert (await w.get("/click", q)).status == 204
        # the partner echoes our (now expired) click URL and adds its own parameters
        echoed = q + "&" + postback(ifa="dev-x")
        response = await w.get("/postback", echoed, now=NOW + 1800)
        assert b'"rule":"click_id"' in response.body
        tampered = echoed.replace("txid=a2", "txid=a3")
        assert b'"rule":"organic"' in (await w.get("/postback", tampered, now=NOW + 1800)).body


async def test_bad_postbacks_are_refused_with_a_reason(dsn: str) -> None:
    async with tracker_world(dsn, partners=("simmmp",)) as w:
        for query, cause in (
            (urlencode({"event": "install", "ifa": "x"}), "partner"),
            (urlencode({"partner": "other", "event": "install", "ifa": "x"}), "partner"),
            (postback(), "malformed"),  # neither a device id nor a click id
            (postback(ifa="x", revenue_micros="-5"), "malformed"),
            (postback(ifa="x", currency="EURO"), "malformed"),
        ):
            response = await w.get("/postback", query)
            assert response.status == 400 and cause.encode() in response.body


async def test_the_cpa_rule_pauses_and_a_later_load_keeps_the_pause(dsn: str) -> None:
    async with tracker_world(dsn) as w:
        # 3 USD of spend on campaign 1 and no install: above 1.2 x its 2.00 target
        for i in range(1000):
            q = notice_query("bill", f"c{i}:1:b0", price="3")
            assert (await w.get("/bill", q)).status == 204
        rule = CpaRule(w.pool, Rule(factor=1.2, min_spend_micros=1_000_000, rounds=2), w.metrics)
        assert await rule.run_once() == []  # once above target is not yet "stays above"
        pauses = await rule.run_once()
        assert [(p.level, p.entity_id) for p in pauses] == [("campaign", 1)]
        assert w.value("tracker_pauses_total", level="campaign") == 1
    conn = await asyncpg.connect(dsn)
    try:
        snapshot = await load_snapshot(conn)
        campaign = snapshot.campaign(1)
        assert campaign is not None
        assert (campaign.status, campaign.paused_by) == ("paused", PAUSED_BY)
        assert "cost per activation" in campaign.pause_reason
        audit = await conn.fetchrow("SELECT * FROM status_changes")
        assert (audit["entity"], audit["entity_id"], audit["changed_by"]) == (
            "campaign",
            1,
            PAUSED_BY,
        )
        # the campaign manager loads the portfolio again, saying "active": the pause holds
        creative = Creative(
            id=10,
            campaign_id=1,
            format="banner",
            w=320,
            h=50,
            markup="m",
            adomain=("acme.example",),
            click_url="https://acme.example/",
        )
        again = Campaign(
            id=1,
            advertiser_id=1,
            name="usd",
            goal_type="CPI",
            goal_price_micros=2_000_000,
            max_bid_cpm_micros=5_000_000,
            daily_budget_micros=0,
            total_budget_micros=0,
            creatives=(creative,),
        )
        await upsert(conn, [], [again])
        kept = (await load_snapshot(conn)).campaign(1)
        assert kept is not None and (kept.status, kept.paused_by) == ("paused", PAUSED_BY)
        assert kept.creatives[0].click_url == "https://acme.example/"
        # through the command line's loader: the kept pause is said, not silent
        document = {
            "campaigns": [
                {
                    "id": 1, "advertiser_id": 1, "name": "usd", "goal_type": "CPI",
                    "goal_price": "2", "max_bid_cpm": "5", "daily_budget": "0",
                    "total_budget": "0",
                    "creatives": [{"id": 10, "format": "banner", "size": "320x50",
                                   "markup": "m", "adomain": ["acme.example"]}],
                }
            ]
        }  # fmt: skip
        result = await load_document(dsn, document)
        assert len(result.kept_pauses) == 1
        assert result.kept_pauses[0].startswith("campaign 1 stays paused (paused by tracker:cpa")
        # saying "paused" makes it the manager's own pause; then "active" resumes it
        await upsert(conn, [], [Campaign(**{**_fields(again), "status": "paused"})])
        await upsert(conn, [], [again])
        resumed = (await load_snapshot(conn)).campaign(1)
        assert resumed is not None and (resumed.status, resumed.paused_by) == ("active", "")
    finally:
        await conn.close()


def _fields(c: Campaign) -> dict[str, object]:
    return {name: getattr(c, name) for name in c.__struct_fields__}
