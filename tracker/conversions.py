"""Postgres: installs and in-app events, attributed by ``tracker.attribution`` in the same
transaction as they are recorded (asyncpg).

An install is recorded once per (user key, app): the unique key makes a resent postback, or two
copies reaching two tracker processes at once, a duplicate. An in-app event is recorded once per
(user key, app, name, event time). Both run in their own short transaction (postbacks are few
next to notices).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg

from tracker.attribution import (
    Attribution,
    Click,
    Install,
    app_key,
    attribute_event,
    attribute_install,
)
from tracker.errors import Unavailable
from tracker.store import _CONNECTION_ERRORS

RECENT_CLICKS: Final = 20  # the device's latest clicks looked at for last-click attribution
MAX_WINDOW_SECONDS: Final = 90 * 86400


@dataclass(frozen=True, slots=True)
class Postback:
    event: str  # "install" or an in-app event name
    user_key: str  # "" when the partner sent no device id
    click_id: str  # "" when none
    app: str  # the app the partner names ("" when none)
    partner: str
    event_ts: str  # as the partner sent it (part of an event's dedupe key)
    revenue_micros: int
    currency: str
    at: float  # fleet time


@dataclass(frozen=True, slots=True)
class Recorded:
    counted: bool  # False: a duplicate
    attribution: Attribution
    user_key: str
    app: str


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _click(row: asyncpg.Record) -> Click:
    return Click(
        click_id=row["click_id"],
        txid=row["txid"],
        campaign_id=row["campaign_id"],
        creative_id=row["creative_id"],
        user_key=row["user_key"] or "",
        clicked_at=row["clicked_at"].timestamp(),
        window_seconds=row["attribution_window_seconds"],
    )


_CLICK_COLUMNS: Final = """c.click_id, c.txid, c.campaign_id, c.creative_id, c.user_key,
    c.clicked_at, camp.attribution_window_seconds, camp.advertiser_id"""


class ConversionStore:
    def __init__(self, pool: asyncpg.Pool, *, timeout: float = 2.0) -> None:
        self.pool = pool
        self.timeout = timeout

    async def record(self, postback: Postback) -> Recorded:
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.pool.acquire() as conn,
                conn.transaction(),
            ):
                if postback.event == "install":
                    return await self._install(conn, postback)
                return await self._event(conn, postback)
        except _CONNECTION_ERRORS as exc:
            raise Unavailable(f"Postgres unavailable: {type(exc).__name__}") from exc

    async def _install(self, conn: asyncpg.Connection, p: Postback) -> Recorded:
        by_id = None
        advertisers: dict[int, int] = {}
        if p.click_id:
            row = await conn.fetchrow(
                f"SELECT {_CLICK_COLUMNS} FROM tracker_clicks c "
                "JOIN campaigns camp ON camp.id = c.campaign_id WHERE c.click_id = $1",
                p.click_id,
            )
            if row is not None:
                by_id = _click(row)
                advertisers[by_id.campaign_id] = row["advertiser_id"]
        user_key = p.user_key or (by_id.user_key if by_id is not None else "")
        if not user_key and by_id is not None:
            user_key = f"click:{by_id.click_id}"
        last = None
        if p.user_key:
            rows = await conn.fetch(
                f"SELECT {_CLICK_COLUMNS} FROM tracker_clicks c "
                "JOIN campaigns camp ON camp.id = c.campaign_id "
                "WHERE c.user_key = $1 AND c.clicked_at <= $2 AND c.clicked_at > $3 "
                "ORDER BY c.clicked_at DESC LIMIT $4",
                p.user_key,
                _ts(p.at),
                _ts(p.at) - timedelta(seconds=MAX_WINDOW_SECONDS),
                RECENT_CLICKS,
            )
            for row in rows:
                click = _click(row)
                advertisers[click.campaign_id] = row["advertiser_id"]
                if click.clicked_at + click.window_seconds > p.at:
                    last = click
                    break
        decision = attribute_install(by_click_id=by_id, last_click=last, now=p.at)
        app = app_key(p.app, advertisers.get(decision.campaign_id))
        inserted = await conn.fetchval(
            """INSERT INTO tracker_installs (user_key, app, partner, attributed, rule, click_id,
                   txid, campaign_id, creative_id, event_ts, installed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (user_key, app) DO NOTHING RETURNING id""",
            user_key,
            app,
            p.partner,
            decision.attributed,
            decision.rule,
            decision.click_id or None,
            decision.txid or None,
            decision.campaign_id or None,
            decision.creative_id or None,
            p.event_ts,
            _ts(p.at),
        )
        return Recorded(inserted is not None, decision, user_key, app)

    async def _event(self, conn: asyncpg.Connection, p: Postback) -> Recorded:
        user_key = p.user_key
        if not user_key and p.click_id:
            user_key = (
                await conn.fetchval(
                    "SELECT user_key FROM tracker_installs WHERE click_id = $1 LIMIT 1", p.click_id
                )
                or f"click:{p.click_id}"
            )
        row = await conn.fetchrow(
            """SELECT i.*, camp.attribution_window_seconds
               FROM tracker_installs i LEFT JOIN campaigns camp ON camp.id = i.campaign_id
               WHERE i.user_key = $1 AND ($2 = '' OR i.app = $2) AND i.installed_at <= $3
               ORDER BY i.attributed DESC, i.installed_at DESC LIMIT 1""",
            user_key,
            p.app,
            _ts(p.at),
        )
        install = None
        if row is not None:
            install = Install(
                user_key=row["user_key"],
                app=row["app"],
                attributed=row["attributed"],
                click_id=row["click_id"] or "",
                txid=row["txid"] or "",
                campaign_id=row["campaign_id"] or 0,
                creative_id=row["creative_id"] or 0,
                installed_at=row["installed_at"].timestamp(),
                window_seconds=row["attribution_window_seconds"] or 0,
            )
        decision = attribute_event(install=install, now=p.at)
        app = p.app or (install.app if install is not None else "")
        inserted = await conn.fetchval(
            """INSERT INTO tracker_events (user_key, app, name, partner, attributed, click_id,
                   txid, campaign_id, creative_id, revenue_micros, currency, event_ts,
                   recorded_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
               ON CONFLICT (user_key, app, name, event_ts) DO NOTHING RETURNING id""",
            user_key,
            app,
            p.event,
            p.partner,
            decision.attributed,
            decision.click_id or None,
            decision.txid or None,
            decision.campaign_id or None,
            decision.creative_id or None,
            p.revenue_micros,
            p.currency,
            p.event_ts,
            _ts(p.at),
        )
        return Recorded(inserted is not None, decision, user_key, app)
