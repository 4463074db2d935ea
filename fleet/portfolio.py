"""Campaign portfolio documents: validate and load into the config database.

A portfolio document (YAML or JSON) is what campaign managers write (and what the simulator's
``rtbfleet campaigns generate`` prints)::

    advertisers:
      - {id: 1, name: Shoply, domain: shoply.example}
    campaigns:
      - id: 10
        advertiser_id: 1
        name: Shoply retargeting US
        goal_type: CPC            # CPM, CPC, CPI or CPA
        goal_price: "0.40"        # money as decimal strings in the campaign currency...
        max_bid_cpm: "6.00"
        daily_budget: "250.00"
        total_budget: "5000.00"   # ...or integer micro-units: daily_budget_micros: 250000000
                                  # (a budget of 0 means no limit of that kind)
        currency: USD
        flight_start: 2026-11-01T00:00:00Z
        flight_end: 2026-12-31T00:00:00Z
        timezone: America/New_York
        pacing_mode: even         # even or asap
        status: active
        targeting: {countries: [USA], os: [ios, android], sizes: ["320x50"]}
        frequency_caps: [{max_impressions: 3, period_seconds: 3600}]
        creatives:
          - {id: 100, format: banner, w: 320, h: 50, markup: "<a href='${CLICK_URL}'>...</a>",
             adomain: [shoply.example], categories: [IAB22],
             click_url: "https://shoply.example/app?click=${CLICK_ID}&c=${CAMPAIGN_ID}"}
        attribution_window_seconds: 604800   # click to install; 7 days when not given
        goal_event: registration  # CPA: the in-app event counted as an activation

A creative's ``click_url`` is where the tracker's click redirect lands, with the macros of
``fleet.clickthrough`` (``${CLICK_ID}``, ``${CAMPAIGN_ID}``, ``${CREATIVE_ID}``,
``${DEVICE_ID}``). It is required of every creative that can be clicked: one whose markup takes
``${CLICK_URL}`` (the tracker's click redirect).

Validation finds every error at once, each with its location (``campaigns[2].creatives[0].w``),
and nothing is written unless the whole document is valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from fleet import clickthrough
from fleet.config import Advertiser, Campaign, Creative, FrequencyCap, Targeting
from fleet.errors import ConfigValidationError
from fleet.money import decimal_string, parse_amount

STATUSES = ("active", "paused", "archived")
GOAL_TYPES = ("CPM", "CPC", "CPI", "CPA")
FORMATS = ("banner", "video", "native")
_SIZE = re.compile(r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{3}$")
_MAX_MICROS = 2**62


@dataclass(frozen=True)
class Portfolio:
    advertisers: tuple[Advertiser, ...]
    campaigns: tuple[Campaign, ...]

    @property
    def creative_count(self) -> int:
        return sum(len(c.creatives) for c in self.campaigns)


@dataclass(frozen=True)
class LoadResult:
    advertisers: int
    campaigns: int
    creatives: int
    # what a rule had paused and the document said "active": kept paused, one line each
    kept_pauses: tuple[str, ...] = ()


def read_document(path: Path) -> Any:
    """Parse a YAML or JSON file; a syntax error becomes a located validation error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigValidationError([(str(path), exc.strerror or str(exc))]) from exc
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigValidationError([(f"{path}:{exc.lineno}:{exc.colno}", exc.msg)]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigValidationError([(where, str(problem))]) from exc


class _Checker:
    """Collects (location, message) problems while reading a document."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append((where, message))

    def mapping(self, value: Any, where: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(where, f"must be a mapping, not {type(value).__name__}")
            return None
        return value

    def unknown_keys(self, item: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in item:
            if key not in allowed:
                self.fail(f"{where}.{key}", "unknown field")

    def required(self, item: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in item or item[key] is None:
            self.fail(f"{where}.{key}", "is required")
            return None
        return item[key]

    def integer(
        self, item: Mapping[str, Any], key: str, where: str, *, minimum: int = 0, default: Any = ...
    ) -> int | None:
        if key not in item and default is not ...:
            return int(default)
        value = self.required(item, key, where)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{where}.{key}", f"must be a whole number, not {value!r}")
            return None
        if value < minimum:
            self.fail(f"{where}.{key}", f"must be at least {minimum}")
            return None
        return value

    def text(
        self,
        item: Mapping[str, Any],
        key: str,
        where: str,
        *,
        default: str | None = None,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
    ) -> str | None:
        if key not in item and default is not None:
            return default
        value = self.required(item, key, where)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{where}.{key}", "must be a non-empty string")
            return None
        if choices and value not in choices:
            self.fail(f"{where}.{key}", f"must be one of {', '.join(choices)}, not {value!r}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(f"{where}.{key}", f"{value!r} is not in the expected form")
            return None
        return value

    def money(self, item: Mapping[str, Any], name: str, where: str) -> int | None:
        """``name`` as a decimal amount, or ``name_micros`` as integer micros."""
        micros_key = f"{name}_micros"
        if micros_key in item and name in item:
            self.fail(f"{where}.{name}", f"give {name} or {micros_key}, not both")
            return None
        if micros_key in item:
            return self.integer(item, micros_key, where)
        value = self.required(item, name, where)
        if value is None:
            return None
        try:
            micros = parse_amount(value)
        except ValueError as exc:
            self.fail(f"{where}.{name}", str(exc))
            return None
        if micros < 0 or micros > _MAX_MICROS:
            self.fail(f"{where}.{name}", "must be between 0 and 4.6e12")
            return None
        return micros

    def timestamp(self, item: Mapping[str, Any], key: str, where: str) -> datetime | None:
        value = item.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                self.fail(f"{where}.{key}", f"{value!r} is not an ISO 8601 time")
                return None
        if not isinstance(value, datetime):
            self.fail(f"{where}.{key}", "must be an ISO 8601 time")
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def string_list(
        self,
        item: Mapping[str, Any],
        key: str,
        where: str,
        check: Callable[[str], str | None] | None = None,
    ) -> tuple[str, ...]:
        value = item.get(key, [])
        if not isinstance(value, list):
            self.fail(f"{where}.{key}", "must be a list")
            return ()
        out = []
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v:
                self.fail(f"{where}.{key}[{i}]", "must be a non-empty string")
                continue
            reason = check(v) if check else None
            if reason:
                self.fail(f"{where}.{key}[{i}]", reason)
                continue
            out.append(v)
        return tuple(out)

    def int_list(
        self, item: Mapping[str, Any], key: str, where: str, lo: int, hi: int
    ) -> tuple[int, ...]:
        value = item.get(key, [])
        if not isinstance(value, list):
            self.fail(f"{where}.{key}", "must be a list")
            return ()
        out = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                self.fail(f"{where}.{key}[{i}]", f"must be a whole number from {lo} to {hi}")
                continue
            out.append(v)
        return tuple(out)


def _country(v: str) -> str | None:
    return None if _COUNTRY.match(v) else f"{v!r} is not an ISO-3166 alpha-3 country (e.g. USA)"


def _size(v: str) -> str | None:
    return None if _SIZE.match(v) else f"{v!r} is not a size such as 300x250"


def _lower(v: str) -> str | None:
    return None if v == v.lower() else f"{v!r} must be lower case"


_TARGETING_KEYS = {f for f in Targeting.__struct_fields__ if f != "version"}
_AUTOMATIC = ("version", "paused_by", "pause_reason")  # written by the database and rules
_CREATIVE_KEYS = {f for f in Creative.__struct_fields__ if f not in (*_AUTOMATIC, "campaign_id")}
_CAMPAIGN_KEYS = {
    "id",
    "advertiser_id",
    "name",
    "goal_type",
    "currency",
    "flight_start",
    "flight_end",
    "timezone",
    "pacing_mode",
    "status",
    "targeting",
    "frequency_caps",
    "creatives",
    "attribution_window_seconds",
    "goal_event",
}
_MONEY_FIELDS = ("goal_price", "max_bid_cpm", "daily_budget", "total_budget")
_CAMPAIGN_KEYS |= set(_MONEY_FIELDS) | {f"{m}_micros" for m in _MONEY_FIELDS}


def _read_targeting(ck: _Checker, raw: Any, where: str) -> Targeting:
    if raw is None:
        return Targeting()
    item = ck.mapping(raw, where)
    if item is None:
        return Targeting()
    ck.unknown_keys(item, _TARGETING_KEYS, where)
    return Targeting(
        countries=ck.string_list(item, "countries", where, _country),
        os=ck.string_list(item, "os", where, _lower),
        device_types=ck.int_list(item, "device_types", where, 1, 7),
        apps_allowed=ck.string_list(item, "apps_allowed", where),
        apps_blocked=ck.string_list(item, "apps_blocked", where),
        sites_allowed=ck.string_list(item, "sites_allowed", where),
        sites_blocked=ck.string_list(item, "sites_blocked", where),
        categories=ck.string_list(item, "categories", where),
        sizes=ck.string_list(item, "sizes", where, _size),
        hours_of_week=ck.int_list(item, "hours_of_week", where, 0, 167),
        segments=ck.string_list(item, "segments", where),
        deal_ids=ck.string_list(item, "deal_ids", where),
    )


def _read_creative(ck: _Checker, raw: Any, where: str, campaign_id: int) -> Creative | None:
    item = ck.mapping(raw, where)
    if item is None:
        return None
    ck.unknown_keys(item, _CREATIVE_KEYS | {"size"}, where)
    w, h = item.get("w"), item.get("h")
    if "size" in item:
        size = item["size"]
        if not isinstance(size, str) or _size(size):
            ck.fail(f"{where}.size", f"{size!r} is not a size such as 300x250")
        else:
            w, h = (int(x) for x in size.split("x"))
        item = {**item, "w": w, "h": h}
    cid = ck.integer(item, "id", where, minimum=1)
    fmt = ck.text(item, "format", where, choices=FORMATS)
    w = ck.integer(item, "w", where, minimum=1)
    h = ck.integer(item, "h", where, minimum=1)
    markup = ck.text(item, "markup", where)
    status = ck.text(item, "status", where, default="active", choices=STATUSES)
    duration = ck.integer(item, "duration", where, default=0)
    adomain = ck.string_list(item, "adomain", where)
    if not item.get("adomain"):
        ck.fail(f"{where}.adomain", "needs at least one advertiser domain")
    categories = ck.string_list(item, "categories", where)
    attributes = ck.int_list(item, "attributes", where, 1, 99)
    mimes = ck.string_list(item, "mimes", where)
    if fmt == "video" and not mimes:
        ck.fail(f"{where}.mimes", "a video creative needs its MIME types")
    click_url = ck.text(item, "click_url", where, default="")
    if click_url:
        problem = clickthrough.check(click_url)
        if problem:
            ck.fail(f"{where}.click_url", problem)
    elif "click_url" not in item and markup is not None and clickthrough.clickable(markup):
        ck.fail(
            f"{where}.click_url",
            "is required: the markup takes ${CLICK_URL}, so the creative can be clicked and "
            "the tracker's click redirect needs somewhere to send the device",
        )
    if (
        cid is None
        or fmt is None
        or w is None
        or h is None
        or markup is None
        or status is None
        or duration is None
        or not adomain
    ):
        return None
    return Creative(
        id=cid,
        campaign_id=campaign_id,
        format=fmt,  # type: ignore[arg-type]
        w=w,
        h=h,
        markup=markup,
        adomain=adomain,
        categories=categories,
        attributes=attributes,
        mimes=mimes,
        duration=duration,
        status=status,  # type: ignore[arg-type]
        click_url=click_url or "",
    )


def _read_campaign(ck: _Checker, raw: Any, where: str) -> Campaign | None:
    item = ck.mapping(raw, where)
    if item is None:
        return None
    ck.unknown_keys(item, _CAMPAIGN_KEYS, where)
    cid = ck.integer(item, "id", where, minimum=1)
    advertiser_id = ck.integer(item, "advertiser_id", where, minimum=1)
    name = ck.text(item, "name", where)
    goal_type = ck.text(item, "goal_type", where, choices=GOAL_TYPES)
    money = {m: ck.money(item, m, where) for m in _MONEY_FIELDS}
    for m in ("goal_price", "max_bid_cpm"):
        if money[m] == 0:
            ck.fail(f"{where}.{m}", "must be greater than 0")
    currency = ck.text(item, "currency", where, default="USD", pattern=_CURRENCY)
    timezone = ck.text(item, "timezone", where, default="UTC")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            ck.fail(f"{where}.timezone", f"{timezone!r} is not a known time zone")
    pacing_mode = ck.text(item, "pacing_mode", where, default="even", choices=("even", "asap"))
    status = ck.text(item, "status", where, default="active", choices=STATUSES)
    window = ck.integer(item, "attribution_window_seconds", where, minimum=1, default=7 * 86400)
    goal_event = ck.text(item, "goal_event", where, default="")
    start = ck.timestamp(item, "flight_start", where)
    end = ck.timestamp(item, "flight_end", where)
    if start is not None and end is not None and end <= start:
        ck.fail(f"{where}.flight_end", "must be after flight_start")
    daily, total = money["daily_budget"], money["total_budget"]
    if daily is not None and total is not None and total and daily > total:
        ck.fail(f"{where}.daily_budget", "must not exceed total_budget")
    targeting = _read_targeting(ck, item.get("targeting"), f"{where}.targeting")
    caps = []
    raw_caps = item.get("frequency_caps", [])
    if not isinstance(raw_caps, list):
        ck.fail(f"{where}.frequency_caps", "must be a list")
        raw_caps = []
    periods = set()
    for i, raw_cap in enumerate(raw_caps):
        cw = f"{where}.frequency_caps[{i}]"
        cap = ck.mapping(raw_cap, cw)
        if cap is None:
            continue
        ck.unknown_keys(cap, {"max_impressions", "period_seconds"}, cw)
        n = ck.integer(cap, "max_impressions", cw, minimum=1)
        p = ck.integer(cap, "period_seconds", cw, minimum=1)
        if p in periods:
            ck.fail(f"{cw}.period_seconds", "two caps with the same period")
        if n is not None and p is not None:
            periods.add(p)
            caps.append(FrequencyCap(max_impressions=n, period_seconds=p))
    creatives = []
    raw_creatives = item.get("creatives", [])
    if not isinstance(raw_creatives, list) or not raw_creatives:
        ck.fail(f"{where}.creatives", "needs at least one creative")
        raw_creatives = []
    for i, raw_creative in enumerate(raw_creatives):
        creative = _read_creative(ck, raw_creative, f"{where}.creatives[{i}]", cid or 0)
        if creative is not None:
            creatives.append(creative)
    required = (cid, advertiser_id, name, goal_type, currency, timezone, pacing_mode, status)
    if any(v is None for v in required) or any(v is None for v in money.values()):
        return None
    assert cid is not None and advertiser_id is not None and name is not None
    return Campaign(
        id=cid,
        advertiser_id=advertiser_id,
        name=name,
        goal_type=goal_type,  # type: ignore[arg-type]
        goal_price_micros=money["goal_price"] or 0,
        max_bid_cpm_micros=money["max_bid_cpm"] or 0,
        daily_budget_micros=money["daily_budget"] or 0,
        total_budget_micros=money["total_budget"] or 0,
        currency=currency or "USD",
        flight_start=start,
        flight_end=end,
        timezone=timezone or "UTC",
        pacing_mode=pacing_mode,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        targeting=targeting,
        frequency_caps=tuple(caps),
        creatives=tuple(creatives),
        attribution_window_seconds=window or 7 * 86400,
        goal_event=goal_event or "",
    )


def validate(document: Any, known_advertisers: Collection[int] | None = ()) -> Portfolio:
    """The whole document as config objects, or ConfigValidationError with every problem.

    Campaigns must name an advertiser of the document or of ``known_advertisers``; ``None``
    leaves that check to a later pass against the database."""
    ck = _Checker()
    doc = ck.mapping(document, "document")
    if doc is None:
        raise ConfigValidationError(ck.problems)
    ck.unknown_keys(doc, {"advertisers", "campaigns"}, "document")
    advertisers: list[Advertiser] = []
    for i, raw in enumerate(doc.get("advertisers") or []):
        where = f"advertisers[{i}]"
        item = ck.mapping(raw, where)
        if item is None:
            continue
        ck.unknown_keys(item, {"id", "name", "domain", "status"}, where)
        aid = ck.integer(item, "id", where, minimum=1)
        name = ck.text(item, "name", where)
        domain = ck.text(item, "domain", where)
        status = ck.text(item, "status", where, default="active", choices=STATUSES)
        if aid is not None and name is not None and domain is not None and status is not None:
            advertisers.append(Advertiser(id=aid, name=name, domain=domain, status=status))  # type: ignore[arg-type]
    campaigns: list[tuple[int, Campaign]] = []  # with their index in the document
    raw_campaigns = doc.get("campaigns") or []
    if not isinstance(raw_campaigns, list):
        ck.fail("campaigns", "must be a list")
        raw_campaigns = []
    for i, raw in enumerate(raw_campaigns):
        campaign = _read_campaign(ck, raw, f"campaigns[{i}]")
        if campaign is not None:
            campaigns.append((i, campaign))
    raw_advertisers = doc.get("advertisers") or []
    _check_unique(ck, [(f"advertisers[{i}]", a) for i, a in enumerate(raw_advertisers)])
    _check_unique(ck, [(f"campaigns[{i}]", c) for i, c in enumerate(raw_campaigns)])
    _check_unique(
        ck,
        [
            (f"campaigns[{i}].creatives[{k}]", cr)
            for i, c in enumerate(raw_campaigns)
            if isinstance(c, Mapping) and isinstance(c.get("creatives"), list)
            for k, cr in enumerate(c["creatives"])
        ],
    )
    known = set(known_advertisers or ()) | {a.id for a in advertisers}
    for i, c in campaigns:
        if known_advertisers is not None and c.advertiser_id not in known:
            ck.fail(f"campaigns[{i}].advertiser_id", f"advertiser {c.advertiser_id} does not exist")
    if ck.problems:
        raise ConfigValidationError(ck.problems)
    return Portfolio(tuple(advertisers), tuple(c for _, c in campaigns))


def _check_unique(ck: _Checker, items: list[tuple[str, Any]]) -> None:
    """Ids must be unique within their kind; reported at the second use."""
    first: dict[int, str] = {}
    for where, item in items:
        ident = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(ident, int):
            continue
        if ident in first:
            ck.fail(f"{where}.id", f"id {ident} is already used by {first[ident]}")
        else:
            first[ident] = where


async def load_document(dsn: str, document: Any) -> LoadResult:
    """Validate everything first (against the database's advertisers too), then upsert it all in
    one transaction. Raises ConfigValidationError and writes nothing on any problem."""
    import asyncpg

    from fleet.db.config_store import upsert

    conn = await asyncpg.connect(dsn)
    try:
        known = {int(r["id"]) for r in await conn.fetch("SELECT id FROM advertisers")}
        portfolio = validate(document, known)
        await upsert(conn, portfolio.advertisers, portfolio.campaigns)
        kept = await conn.fetch(
            """SELECT 'campaign' AS what, id, paused_by, pause_reason FROM campaigns
               WHERE id = ANY($1::bigint[]) AND paused_by <> ''
               UNION ALL
               SELECT 'creative', id, paused_by, pause_reason FROM creatives
               WHERE id = ANY($2::bigint[]) AND paused_by <> '' ORDER BY 1, 2""",
            [c.id for c in portfolio.campaigns if c.status == "active"],
            [cr.id for c in portfolio.campaigns for cr in c.creatives if cr.status == "active"],
        )
    finally:
        await conn.close()
    return LoadResult(
        len(portfolio.advertisers),
        len(portfolio.campaigns),
        portfolio.creative_count,
        tuple(
            f"{r['what']} {r['id']} stays paused (paused by {r['paused_by']}: "
            f"{r['pause_reason']}); set its status to paused, then active, to resume it"
            for r in kept
        ),
    )


def to_document(portfolio: Portfolio) -> dict[str, Any]:
    """The document form of a portfolio (money as decimal strings): round-trips through validate."""

    campaigns = []
    for c in portfolio.campaigns:
        doc = msgspec.json.decode(msgspec.json.encode(c))
        for name in _MONEY_FIELDS:
            doc.pop(f"{name}_micros", None)
        for key in _AUTOMATIC:
            doc.pop(key)
        if not doc["goal_event"]:
            doc.pop("goal_event")
        doc["goal_price"] = decimal_string(c.goal_price_micros)
        doc["max_bid_cpm"] = decimal_string(c.max_bid_cpm_micros)
        doc["daily_budget"] = decimal_string(c.daily_budget_micros)
        doc["total_budget"] = decimal_string(c.total_budget_micros)
        doc["targeting"] = {k: v for k, v in doc["targeting"].items() if v and k != "version"}
        for cr in doc["creatives"]:
            for key in (*_AUTOMATIC, "campaign_id"):
                cr.pop(key)
            if not cr["click_url"]:
                cr.pop("click_url")
        for key in ("flight_start", "flight_end"):
            if doc[key] is None:
                doc.pop(key)
        campaigns.append(doc)
    advertisers = [
        {k: v for k, v in msgspec.json.decode(msgspec.json.encode(a)).items() if k != "version"}
        for a in portfolio.advertisers
    ]
    return {"advertisers": advertisers, "campaigns": campaigns}
