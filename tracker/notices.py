"""The tracker's endpoints, independent of the HTTP transport.

``Tracker.handle(method, path, query, headers, body, now)`` answers one request to ``/win``,
``/bill``, ``/loss``, ``/imp``, ``/click`` or ``/postback`` with ``(status, headers, body)``;
any HTTP server core mounts it in a few lines. ``now`` is fleet time (seconds since the epoch).

A notice is answered only once what it means is durable: its dedupe row and effects committed
(``tracker.store``), so an acknowledged notice is never lost and never counted twice. Events go
to the bus, frequency counters to memcached and conversions to Kinesis after the commit, and
only for what was counted now (not for duplicates).

Answers: 403 for a URL that is not ours, whole, unexpired and for this path; 400 for other bad
input (a price that is not a CPM, above our bid, or missing on a billing notice); 503 when
Postgres cannot be reached (the sender retries; nothing was counted); 200 with the markup on
``/win``; a 1x1 GIF on ``/imp``; 302 to the creative's click-through URL on ``/click``; 204 on
``/bill`` and ``/loss``; 200 with a JSON outcome on ``/postback``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from fleet import clickthrough, signing
from fleet.events import (
    AnyEvent,
    BillingEvent,
    ClickEvent,
    ImpressionEvent,
    InAppEvent,
    InstallEvent,
    LossEvent,
    WinEvent,
)
from fleet.money import decimal_string
from tracker.attribution import click_id_for
from tracker.batch import Batch, NoticeRow
from tracker.catalog import Catalog
from tracker.conversions import ConversionStore, Postback, Recorded
from tracker.errors import Refused, Unavailable
from tracker.kinesis import KinesisSink
from tracker.memcache import FrequencyWriter
from tracker.metrics import TrackerMetrics
from tracker.notice import Notice, parse_query, python_read_notice
from tracker.spend import win_markup
from tracker.store import CatalogSource, GroupCommitter

# The compiled notice reader when built (tracker/_notice.pyx: the same notices and refusals as
# the pure-Python reference, held by tests/tracker/test_notice_reading.py)
try:
    from tracker._notice import read_notice
except ImportError:  # pragma: no cover - the extension is built by `make`
    read_notice = python_read_notice

log = logging.getLogger("tracker.notices")

NOTICE_PATHS: Final = {f"/{kind}": kind for kind in signing.KINDS}
POSTBACK_PATH: Final = "/postback"
# The smallest transparent GIF: what an impression pixel answers.
PIXEL: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE: Final = ("Cache-Control", "no-store")
_ZERO_IFA: Final = frozenset({"", "00000000-0000-0000-0000-000000000000"})
_MARKUP_TYPES: Final = {
    "banner": "text/html; charset=utf-8",
    "video": "application/xml",
    "native": "application/json",
}
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class Pending:
    """A notice waiting for its group commit: its batch (await ``batch.future``, then
    ``Tracker.finish`` it), its ticket and rows there, and what its answer needs."""

    __slots__ = ("batch", "caps", "catalog", "click_id", "kind", "notice", "now", "rows", "ticket")

    def __init__(
        self,
        batch: Batch,
        ticket: int,
        rows: list[NoticeRow],
        kind: str,
        notice: Notice,
        catalog: Catalog,
        caps: list[tuple[int, int]],
        click_id: str,
        now: float,
    ) -> None:
        self.batch = batch
        self.ticket = ticket
        self.rows = rows
        self.kind = kind
        self.notice = notice
        self.catalog = catalog
        self.caps = caps
        self.click_id = click_id
        self.now = now


Step = Response | Pending | Coroutine[Any, Any, Response]


class _Tally:
    """What a batch's notices counted, recorded in the metrics once for the batch."""

    __slots__ = ("duplicates", "notices", "spend")

    def __init__(self) -> None:
        self.notices: dict[tuple[str, str], int] = {}
        self.duplicates: dict[str, int] = {}
        self.spend: dict[str, int] = {}  # micros by campaign currency

    def count(self, kind: str, outcome: str) -> None:
        key = (kind, outcome)
        self.notices[key] = self.notices.get(key, 0) + 1


# bill and loss: never changed once made (a transport may convert it once)
NO_CONTENT: Final = Response(204, [_NO_STORE])
_NO_CAPS: Final[list[tuple[int, int]]] = []  # never changed: a notice without caps shares it


def _json_response(status: int, payload: Mapping[str, object]) -> Response:
    return Response(
        status, [("Content-Type", "application/json"), _NO_STORE], _json.encode(payload)
    )


@dataclass(frozen=True)
class Streams:
    attributed: str = "rtbfleet-conversions"
    organic: str = "rtbfleet-organic"


class Tracker:
    def __init__(
        self,
        *,
        keys: signing.KeySet,
        user_secret: bytes,
        public_url: str,
        committer: GroupCommitter,
        catalog: CatalogSource,
        conversions: ConversionStore,
        metrics: TrackerMetrics,
        frequency: FrequencyWriter | None = None,
        publish: Callable[[AnyEvent], None] | None = None,
        kinesis: KinesisSink | None = None,
        streams: Streams = Streams(),
        partners: Sequence[str] = (),
    ) -> None:
        self.keys = keys
        self.user_secret = user_secret
        self.public_url = public_url.rstrip("/")
        self.committer = committer
        self.catalog = catalog
        self.conversions = conversions
        self.metrics = metrics
        self.frequency = frequency
        self.publish = publish
        self.kinesis = kinesis
        self.streams = streams
        self.partners = frozenset(partners)
        # label children by (kind, outcome): looked up per notice, so made once
        self._counts: dict[tuple[str, str], Any] = {}
        self._spend: dict[str, Any] = {}  # the spend counter's child by currency
        self._no_user_key = metrics.frequency.labels("no_user_key")

    def _child(self, kind: str, outcome: str) -> Any:
        child = self._counts.get((kind, outcome))
        if child is None:
            child = self._counts[(kind, outcome)] = self.metrics.notices.labels(kind, outcome)
        return child

    def _count(self, kind: str, outcome: str) -> None:
        self._child(kind, outcome).inc()

    @property
    def ready(self) -> bool:
        """What ``/readyz`` answers once mounted: the campaign catalog has been read (until
        then every notice would be answered 503)."""
        return self.catalog.catalog.loaded_at > 0

    async def handle(
        self,
        method: str,
        path: str,
        query: str | bytes,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> Response:
        step = self.begin(method, path, query, now)
        if isinstance(step, Pending):
            await step.batch.future
            return self.finish(step)
        if isinstance(step, Response):
            return step
        return await step

    def begin(self, method: str, path: str, query: str | bytes, now: float) -> Step:
        """The answer when it is known at once (a refusal, say); else a notice waiting for its
        commit (``Pending``: await its batch's future, then ``finish`` it); else (a postback, a
        notice the catalog must be read again for) a coroutine answering it. Plain functions
        up to the one await of the commit: no coroutine per notice."""
        kind = NOTICE_PATHS.get(path)
        if kind is None and path != POSTBACK_PATH:
            return _json_response(404, {"error": f"no such endpoint: {path[:100]}"})
        if method not in ("GET", "POST", "HEAD"):
            response = _json_response(405, {"error": f"method {method[:20]} not allowed"})
            response.headers.append(("Allow", "GET, POST, HEAD"))
            return response
        if kind is None:
            return self._guarded("postback", self._postback(query, now))
        try:
            return self._start(kind, query, now)
        except (Refused, Unavailable) as exc:
            return self._failed(kind, exc)

    def finish(self, pending: Pending) -> Response:
        """The answer of a notice whose batch is answered."""
        return self.finish_all([pending])[0]

    def finish_all(self, pendings: Sequence[Pending]) -> list[Response]:
        """The answers of notices whose batch is answered, in order (a batch's notices, answered
        from its one callback); what they counted goes to the metrics once for them all."""
        tally = _Tally()
        answers = []
        for pending in pendings:
            try:
                answers.append(self._finish(pending, tally))
            except (Refused, Unavailable) as exc:
                answers.append(self._failed(pending.kind, exc))
        self._record(tally)
        return answers

    def _record(self, tally: _Tally) -> None:
        for (kind, outcome), n in tally.notices.items():
            self._child(kind, outcome).inc(n)
        for kind, n in tally.duplicates.items():
            self.metrics.duplicates.labels(kind).inc(n)
        for currency, micros in tally.spend.items():
            spend = self._spend.get(currency)
            if spend is None:
                spend = self._spend[currency] = self.metrics.spend.labels(currency)
            spend.inc(micros)

    def _failed(self, label: str, exc: Refused | Unavailable) -> Response:
        if isinstance(exc, Refused):
            self.metrics.refusals.labels(exc.cause).inc()
            self._count(label, "refused")
            return _json_response(exc.status, {"error": exc.reason, "cause": exc.cause})
        self._count(label, "unavailable")
        response = _json_response(503, {"error": f"unavailable, retry: {exc}"})
        response.headers.append(("Retry-After", "1"))
        return response

    async def _guarded(self, label: str, answer: Coroutine[Any, Any, Response]) -> Response:
        try:
            return await answer
        except (Refused, Unavailable) as exc:
            return self._failed(label, exc)

    # -- notices -------------------------------------------------------------------------------

    def _start(self, kind: str, query: str | bytes, now: float) -> Step:
        notice = read_notice(kind, query, self.keys, now)
        if notice.price_state == "missing":
            self.metrics.price_missing.labels(kind).inc()
            if kind == "bill":
                raise Refused("price_missing", "the clearing price macro was not filled in")
        if kind == "bill" and notice.price_micros is None:
            raise Refused("price_missing", "a billing notice needs its clearing price")
        catalog = self.catalog.catalog
        if not catalog.knows(notice.campaign_id, notice.creative_id, notice.currency):
            return self._guarded(kind, self._after_reload(kind, notice, now))
        return self._enqueue(kind, notice, catalog, now)

    async def _after_reload(self, kind: str, notice: Notice, now: float) -> Response:
        # read again (at most once a ``min_interval``) when it lacks what the notice names
        catalog = await self.catalog.ensure(notice.campaign_id, notice.creative_id, notice.currency)
        if not catalog.knows(notice.campaign_id, notice.creative_id, notice.currency):
            raise Refused("unknown", "unknown campaign, creative or currency")
        pending = self._enqueue(kind, notice, catalog, now)
        await pending.batch.future
        return self.finish(pending)

    def _enqueue(self, kind: str, notice: Notice, catalog: Catalog, now: float) -> Pending:
        click_id = click_id_for(notice.txid, self.user_secret) if kind == "click" else ""
        # kind, txid, campaign, creative, price, currency, at, user key, click id
        main = NoticeRow(
            kind,
            notice.txid,
            notice.campaign_id,
            notice.creative_id,
            notice.price_micros or 0,
            notice.currency,
            now,
            notice.user_key,
            click_id,
        )
        rows = [main]
        caps = self._caps(catalog, notice)
        if caps:
            rows.append(
                NoticeRow(
                    "freq",
                    notice.txid,
                    notice.campaign_id,
                    notice.creative_id,
                    0,
                    notice.currency,
                    now,
                    notice.user_key,
                )
            )
        batch, ticket = self.committer.enqueue(rows)
        return Pending(batch, ticket, rows, kind, notice, catalog, caps, click_id, now)

    def _finish(self, p: Pending, tally: _Tally) -> Response:
        kind, notice, catalog, rows, caps = p.kind, p.notice, p.catalog, p.rows, p.caps
        committer = self.committer
        counted = committer.result(p.batch, p.ticket, rows[0])
        if counted.unpriced:
            raise Refused("unknown", "the campaign or its exchange rate no longer exists")
        if counted.counted:
            tally.count(kind, "counted")
            if kind == "bill":
                currency = catalog.campaigns[notice.campaign_id].currency
                tally.spend[currency] = tally.spend.get(currency, 0) + counted.cost_micros
            self._emit(notice, p.now, counted.cost_micros, p.click_id)
        else:
            tally.count(kind, "duplicate")
            tally.duplicates[kind] = tally.duplicates.get(kind, 0) + 1
        if (
            caps
            and self.frequency is not None
            and committer.result(p.batch, p.ticket, rows[1]).counted
        ):
            self.frequency.increment(notice.user_key, caps)
        if kind == "bill" or kind == "loss":
            return NO_CONTENT
        return self._answer(kind, notice, catalog, p.click_id)

    def _caps(self, catalog: Catalog, notice: Notice) -> list[tuple[int, int]]:
        if notice.kind not in ("imp", "bill"):
            return _NO_CAPS
        campaign = catalog.campaigns[notice.campaign_id]
        if not campaign.frequency_caps:
            return _NO_CAPS
        if not notice.user_key:
            self._no_user_key.inc()
            return _NO_CAPS
        return [(campaign.id, cap.period_seconds) for cap in campaign.frequency_caps]

    def _emit(self, n: Notice, now: float, cost: int, click_id: str) -> None:
        if self.publish is None:
            return
        price = n.price_micros or 0
        txid, cid, crid = n.txid, n.campaign_id, n.creative_id
        event: AnyEvent
        if n.kind == "win":
            event = WinEvent(
                txid=txid, ts=now, campaign_id=cid, creative_id=crid,
                bid_cpm_micros=n.bid_micros, clear_cpm_micros=price,
            )  # fmt: skip
        elif n.kind == "loss":
            event = LossEvent(
                txid=txid, ts=now, campaign_id=cid, creative_id=crid,
                bid_cpm_micros=n.bid_micros, loss_reason=n.loss_reason, clear_cpm_micros=price,
            )  # fmt: skip
        elif n.kind == "bill":
            event = BillingEvent(
                txid=txid, ts=now, campaign_id=cid, creative_id=crid,
                clear_cpm_micros=price, cost_micros=cost,
            )  # fmt: skip
        elif n.kind == "imp":
            event = ImpressionEvent(txid=txid, ts=now, campaign_id=cid, creative_id=crid)
        else:
            event = ClickEvent(
                txid=txid, ts=now, campaign_id=cid, creative_id=crid, click_id=click_id
            )
        self.publish(event)

    def _answer(self, kind: str, notice: Notice, catalog: Catalog, click_id: str) -> Response:
        creative = catalog.creatives[notice.creative_id]
        if kind == "win":
            price = decimal_string(notice.price_micros) if notice.price_micros is not None else ""
            markup = win_markup(
                creative.markup, notice.signed, self.keys.signer, self.public_url, price
            )
            content_type = _MARKUP_TYPES.get(creative.format, "text/plain; charset=utf-8")
            return Response(200, [("Content-Type", content_type), _NO_STORE], markup.encode())
        if kind == "imp":
            return Response(200, [("Content-Type", "image/gif"), _NO_STORE], PIXEL)
        if kind == "click":
            if not creative.click_url:
                return Response(204, [_NO_STORE])
            location = clickthrough.expand(
                creative.click_url,
                click_id=click_id,
                campaign_id=notice.campaign_id,
                creative_id=notice.creative_id,
                device_id=notice.user_key,
            )
            return Response(302, [("Location", location), _NO_STORE])
        return NO_CONTENT

    # -- postbacks -----------------------------------------------------------------------------

    async def _postback(self, query: str | bytes, now: float) -> Response:
        postback = self._read_postback(parse_query(query), now)
        recorded = await self.conversions.record(postback)
        event = "install" if postback.event == "install" else "inapp"
        d = recorded.attribution
        if not recorded.counted:
            self.metrics.attributions.labels(event, "duplicate").inc()
            self.metrics.duplicates.labels(event).inc()
            self.metrics.notices.labels("postback", "duplicate").inc()
            return _json_response(200, {"status": "duplicate"})
        self.metrics.attributions.labels(event, d.rule).inc()
        self.metrics.notices.labels("postback", "counted").inc()
        self._conversion(postback, recorded, now)
        return _json_response(
            200,
            {
                "status": "counted",
                "attributed": d.attributed,
                "rule": d.rule,
                "campaign_id": d.campaign_id,
            },
        )

    def _read_postback(self, params: dict[str, str], now: float) -> Postback:
        partner = params.get("partner", "").strip()
        if not partner or (self.partners and partner not in self.partners):
            raise Refused("partner", "unknown or missing measurement partner")
        event = params.get("event", "").strip()
        if not event or len(event) > 64:
            raise Refused("malformed", "a postback needs its event (install or an event name)")
        revenue_raw = params.get("revenue_micros", "0").strip() or "0"
        if not revenue_raw.isascii() or not revenue_raw.isdigit() or len(revenue_raw) > 15:
            raise Refused("malformed", "revenue_micros must be a whole number of micros")
        currency = params.get("currency", "USD").strip().upper() or "USD"
        if len(currency) != 3 or not currency.isalpha() or not currency.isascii():
            raise Refused("malformed", f"currency {currency[:10]!r} is not ISO 4217")
        ifa = params.get("ifa", "").strip()
        user_key = signing.user_key(ifa, self.user_secret) if ifa not in _ZERO_IFA else ""
        click_id = params.get(clickthrough.CLICK_ID_PARAM, "").strip()[:64]
        if not click_id and params.get(signing.KIND) == "click":
            # the partner echoed our own click URL: its click id follows from the txid once the
            # signature holds (its expiry does not matter: the attribution window does)
            signed = signing.signed_params(params)
            if self.keys.key_index(signed, params.get(signing.SIGNATURE, "")) is not None:
                click_id = click_id_for(signed.get(signing.TXID, ""), self.user_secret)
        if not user_key and not click_id:
            raise Refused("malformed", "a postback needs the device id (ifa) or a click id")
        return Postback(
            event=event,
            user_key=user_key,
            click_id=click_id,
            app=params.get("app", "").strip()[:200],
            partner=partner[:64],
            event_ts=params.get("event_ts", "").strip()[:32],
            revenue_micros=int(revenue_raw),
            currency=currency,
            at=now,
        )

    def _conversion(self, p: Postback, recorded: Recorded, now: float) -> None:
        d = recorded.attribution
        txid = d.txid or f"organic:{recorded.user_key}"
        event: InstallEvent | InAppEvent
        if p.event == "install":
            event = InstallEvent(
                txid=txid,
                ts=now,
                campaign_id=d.campaign_id,
                creative_id=d.creative_id,
                partner=p.partner,
                click_id=d.click_id,
                user_key=recorded.user_key,
                attributed=d.attributed,
                rule=d.rule,
                app=recorded.app,
                currency=p.currency,
            )
        else:
            event = InAppEvent(
                txid=txid,
                ts=now,
                campaign_id=d.campaign_id,
                creative_id=d.creative_id,
                name=p.event,
                revenue_micros=p.revenue_micros,
                partner=p.partner,
                click_id=d.click_id,
                user_key=recorded.user_key,
                attributed=d.attributed,
                app=recorded.app,
                currency=p.currency,
            )
        if self.publish is not None:
            self.publish(event)
        if self.kinesis is not None:
            stream = self.streams.attributed if d.attributed else self.streams.organic
            # the key it was counted once under: what consumers deduplicate redeliveries on
            key = [p.event, recorded.user_key, recorded.app]
            if p.event != "install":
                key.append(p.event_ts)
            record = {"id": "|".join(key), **msgspec.to_builtins(event)}
            self.kinesis.put(stream, recorded.user_key, msgspec.json.encode(record))
