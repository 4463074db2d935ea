"""Market draws as OpenRTB bid requests: JSON bytes on the wire, the truth kept alongside.

Most requests use the OpenRTB 2.6 layout (``regs.gdpr``, ``user.consent``, ``source.schain``,
``imp.rwdd``); a share uses the 2.5 layout where the same facts live in ``ext`` objects. Requests
carry banner, video or native impressions for apps and sites, PMP deals on some placements, TCF
v2 consent strings on EU traffic, US privacy strings in the USA, COPPA flags on child-directed
inventory and, now and then, a crawler's user agent. ``Schedule`` gives open-loop arrival times:
a Poisson process whose rate follows the market's daily cycle.
"""

from __future__ import annotations

import dataclasses
import gzip
import random
from typing import Any

import msgspec

from sim import vocabulary as vocab
from sim.market import Market, Opportunity, Slot
from sim.population import SEGMENT_SOURCE, Publisher, User

_encode = msgspec.json.Encoder().encode
BCAT = list(vocab.SENSITIVE_CATEGORIES)
NATIVE_REQUEST = msgspec.json.encode(
    {
        "ver": "1.2",
        "context": 1,
        "plcmttype": 1,
        "plcmtcnt": 1,
        "assets": [
            {"id": 1, "required": 1, "title": {"len": 90}},
            {"id": 2, "required": 1, "img": {"type": 3, "wmin": 600, "hmin": 314}},
            {"id": 3, "required": 0, "img": {"type": 1, "w": 80, "h": 80}},
            {"id": 4, "required": 0, "data": {"type": 2, "len": 140}},
        ],
        "eventtrackers": [{"event": 1, "methods": [1]}],
    }
).decode()


@dataclasses.dataclass(slots=True)
class SimRequest:
    """One bid request as sent, with the opportunity (the truth) it came from."""

    id: str
    opportunity: Opportunity
    body: bytes  # as sent: gzip-compressed when ``gzip``
    json_size: int
    version: str  # "2.5" | "2.6"
    gzip: bool
    deadline_ms: int  # tmax, or the exchange's own deadline when tmax is absent
    headers: tuple[tuple[str, str], ...]


class Schedule:
    """Open-loop arrival times from a seed: requests are due by the clock, not by answers."""

    def __init__(
        self,
        market: Market,
        rng: random.Random,
        *,
        rate: float,
        time_scale: float,
        sim_start: float,
    ) -> None:
        self._market = market
        self._rng = rng
        self._rate = rate
        self._scale = time_scale
        self._start = sim_start
        self._real = 0.0
        self._by_minute: dict[int, float] = {}

    @property
    def sim_start(self) -> float:
        return self._start

    def set_start(self, sim_start: float) -> None:
        """Begin the simulated clock at ``sim_start`` instead (before the first ``next()``)."""
        if self._real:
            raise RuntimeError("the schedule has started")
        self._start = sim_start

    def _intensity(self, sim_ts: float) -> float:
        minute = int(sim_ts // 60) % 1440
        value = self._by_minute.get(minute)
        if value is None:
            value = self._by_minute[minute] = self._market.intensity(minute * 60.0)
        return value

    def next(self) -> tuple[float, float]:
        """(seconds after the start, simulated time) of the next request."""
        sim_ts = self._start + self._real * self._scale
        self._real += self._rng.expovariate(self._rate * self._intensity(sim_ts))
        return self._real, self._start + self._real * self._scale


class Traffic:
    """Turns market draws into requests; the same seed gives the same bytes."""

    def __init__(
        self,
        market: Market,
        rng: random.Random,
        *,
        gzip_share: float,
        ortb25_share: float,
        default_tmax_ms: int,
        id_prefix: str = "",
    ) -> None:
        self.market = market
        self._rng = rng
        self._id_prefix = id_prefix  # a run's tag (sim.demo): ids unique across runs
        self.run_tag = id_prefix.rstrip("-")
        self._gzip_share = gzip_share
        self._ortb25_share = ortb25_share
        self._default_tmax = default_tmax_ms
        self._devices: dict[int, dict[str, Any]] = {}
        self._inventory: dict[str, dict[str, Any]] = {}

    def request(self, sim_ts: float) -> SimRequest:
        rng = self._rng
        opp = self.market.draw(rng, sim_ts)
        request_id = f"{self._id_prefix}{rng.getrandbits(96):024x}"
        v25 = rng.random() < self._ortb25_share
        compressed = rng.random() < self._gzip_share
        document = self.document(opp, request_id, f"{rng.getrandbits(64):016x}", v25)
        raw = _encode(document)
        body = gzip.compress(raw, compresslevel=6, mtime=0) if compressed else raw
        version = "2.5" if v25 else "2.6"
        headers = [("Content-Type", "application/json"), ("X-Openrtb-Version", version)]
        if compressed:
            headers += [("Content-Encoding", "gzip"), ("Accept-Encoding", "gzip")]
        return SimRequest(
            id=request_id,
            opportunity=opp,
            body=body,
            json_size=len(raw),
            version=version,
            gzip=compressed,
            deadline_ms=opp.tmax_ms or self._default_tmax,
            headers=tuple(headers),
        )

    def document(self, opp: Opportunity, request_id: str, tid: str, v25: bool) -> dict[str, Any]:
        """The OpenRTB request object for ``opp``."""
        doc: dict[str, Any] = {
            "id": request_id,
            "at": opp.auction_type,
            "imp": [self._imp(opp, slot, v25) for slot in opp.slots],
            "device": self._device(opp.user, opp.connection_type),
            "cur": ["USD"],
            "bcat": BCAT,
        }
        if opp.tmax_ms:
            doc["tmax"] = opp.tmax_ms
        doc[opp.publisher.kind] = self._inventory_object(opp.publisher)
        user = self._user(opp.user, opp.publisher.kind)
        regs: dict[str, Any] = {}
        if opp.coppa:
            regs["coppa"] = 1
        if v25:
            ext: dict[str, Any] = {}
            if opp.gdpr:
                ext["gdpr"] = 1
                if opp.consent:
                    user["ext"] = {"consent": opp.consent}
            if opp.us_privacy:
                ext["us_privacy"] = opp.us_privacy
            if ext:
                regs["ext"] = ext
            doc["source"] = {"tid": tid, "ext": {"schain": _schain(opp, request_id)}}
        else:
            if opp.gdpr:
                regs["gdpr"] = 1
                if opp.consent:
                    user["consent"] = opp.consent
            if opp.us_privacy:
                regs["us_privacy"] = opp.us_privacy
            doc["source"] = {"tid": tid, "schain": _schain(opp, request_id)}
        if user:
            doc["user"] = user
        if regs:
            doc["regs"] = regs
        return doc

    def _imp(self, opp: Opportunity, slot: Slot, v25: bool) -> dict[str, Any]:
        pl = slot.placement
        imp: dict[str, Any] = {"id": slot.imp_id, "tagid": pl.tag_id}
        if slot.floor:
            imp["bidfloor"] = slot.floor / 1_000_000
            imp["bidfloorcur"] = slot.floor_currency
        if pl.interstitial:
            imp["instl"] = 1
        if pl.format == "banner":
            imp["banner"] = {
                "w": pl.w,
                "h": pl.h,
                "format": [{"w": pl.w, "h": pl.h}],
                "pos": pl.pos,
            }
        elif pl.format == "video":
            imp["video"] = {
                "mimes": list(vocab.VIDEO_MIMES),
                "minduration": 5,
                "maxduration": 30,
                "protocols": [2, 3, 5, 6],
                "w": pl.w,
                "h": pl.h,
                "linearity": 1,
                "plcmt": 1 if pl.interstitial else 2,
                "skip": 0 if pl.rewarded else 1,
            }
            if pl.rewarded:
                if v25:
                    imp["ext"] = {"rewarded": 1}
                else:
                    imp["rwdd"] = 1
        else:
            imp["native"] = {"request": NATIVE_REQUEST, "ver": "1.2"}
        if slot.deals:
            fx = vocab.FX_PER_USD_MICROS[slot.floor_currency]
            imp["pmp"] = {
                "private_auction": 1 if pl.private_auction else 0,
                "deals": [
                    {
                        "id": d.id,
                        "bidfloor": (d.floor_usd_micros * fx // 1_000_000) / 1_000_000,
                        "bidfloorcur": slot.floor_currency,
                        "at": d.auction_type,
                    }
                    for d in slot.deals
                ],
            }
        return imp

    def _device(self, user: User, connection_type: int) -> dict[str, Any]:
        base = self._devices.get(user.index)
        if base is None:
            base = {
                "ua": user.ua,
                "ip": user.ip,
                "devicetype": user.device_type,
                "make": user.make,
                "model": user.model,
                "os": user.os,
                "osv": user.osv,
                "language": user.language,
                "js": 1,
                "geo": {"country": user.country, "type": 2},
            }
            if user.ifa:
                base["ifa"] = user.ifa
                base["lmt"] = 1 if user.lmt else 0
            self._devices[user.index] = base
        return {**base, "connectiontype": connection_type}

    def _user(self, user: User, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if user.crawler:
            return out
        if kind == "site" and user.buyeruid:
            out["buyeruid"] = user.buyeruid
        if user.segments:
            out["data"] = [
                {
                    "id": SEGMENT_SOURCE,
                    "name": "Sim DMP",
                    "segment": [{"id": s} for s in user.segments],
                }
            ]
        if user.yob and user.index % 3 == 0:
            out["yob"] = user.yob
        return out

    def _inventory_object(self, publisher: Publisher) -> dict[str, Any]:
        obj = self._inventory.get(publisher.id)
        if obj is None:
            common = {
                "id": publisher.id,
                "cat": list(publisher.categories),
                "publisher": {"id": publisher.id.replace("pub", "p"), "name": publisher.name},
            }
            if publisher.kind == "app":
                name = publisher.name.rsplit(".", 1)[-1]
                obj = {
                    **common,
                    "name": name,
                    "bundle": publisher.name,
                    "storeurl": f"https://play.google.com/store/apps/details?id={publisher.name}",
                }
            else:
                obj = {
                    **common,
                    "domain": publisher.name,
                    "page": f"https://{publisher.name}/articles/index.html",
                }
            self._inventory[publisher.id] = obj
        return obj


def _schain(opp: Opportunity, request_id: str) -> dict[str, Any]:
    return {
        "ver": "1.0",
        "complete": 1,
        "nodes": [{"asi": opp.seller.domain, "sid": opp.publisher.id, "hp": 1, "rid": request_id}],
    }
