"""OpenRTB 2.6 request and response objects (2.5 compatible) and the no-bid reason list.

The decoder is ``bidder.decoding`` (with its repair path in ``bidder.lenient``). Only what a bid
needs is validated: the request id, a non-empty list of uniquely named imps, at
most one of site/app/dooh, finite non-negative floors. Everything else is tolerated: unknown
fields are ignored, unknown enum values kept as plain ints, and the number/string mix-ups real
exchanges send are coerced (``"w": "300"``, ``"bidfloor": "0.5"``, ``"secure": true``,
``"id": 123``, ``300.0`` for an int, a lone object or comma-separated string where a list goes).

Decoding takes one of two paths (``bidder.decoding.decode_request``):

- fast: ``msgspec`` straight into the Structs with ``strict=False`` (str -> number/bool,
  0/1 -> bool, integral floats -> int);
- repair, only when the fast path fails validation: decode to plain objects, walk them against
  the Struct type tree coercing what can be coerced, then convert. A value that cannot be coerced
  is dropped (the field keeps its default) unless dropping it would loosen a restriction or
  misprice a bid (floors, block lists, deals, privacy flags, sizes): those are ``CRITICAL`` and
  the request is rejected with the field path instead (``bidder.lenient``). So ``null``, ``""``
  or ``" "`` in a number or flag that is not critical reads as absent.

The 2.5 ``ext`` locations (``regs.ext.gdpr``, ``regs.ext.us_privacy``, ``user.ext.consent``,
``source.ext.schain``) are read as well as the 2.6 promoted fields; accessors below prefer the
promoted field and fall back to the extension.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec


class _Obj(msgspec.Struct, gc=False, omit_defaults=True):
    """Base of every OpenRTB object: no cycles, defaults left out when encoding."""


# -- request ------------------------------------------------------------------------------------


class Format(_Obj):
    w: int | None = None
    h: int | None = None
    wratio: int | None = None
    hratio: int | None = None
    wmin: int | None = None


class Banner(_Obj):
    format: list[Format] = []
    w: int | None = None
    h: int | None = None
    wmax: int | None = None
    hmax: int | None = None
    wmin: int | None = None
    hmin: int | None = None
    btype: list[int] = []
    battr: list[int] = []
    pos: int | None = None
    mimes: list[str] = []
    topframe: int | None = None
    api: list[int] = []
    id: str | None = None
    vcm: int | None = None


class Video(_Obj):
    mimes: list[str] = []
    minduration: int | None = None
    maxduration: int | None = None
    protocols: list[int] = []
    protocol: int | None = None  # 2.5 deprecated
    w: int | None = None
    h: int | None = None
    startdelay: int | None = None
    placement: int | None = None  # 2.5
    plcmt: int | None = None  # 2.6
    linearity: int | None = None
    skip: int | None = None
    battr: list[int] = []
    maxextended: int | None = None
    minbitrate: int | None = None
    maxbitrate: int | None = None
    playbackmethod: list[int] = []
    delivery: list[int] = []
    pos: int | None = None
    api: list[int] = []
    poddur: int | None = None
    podid: str | None = None


class Audio(_Obj):
    mimes: list[str] = []
    minduration: int | None = None
    maxduration: int | None = None
    protocols: list[int] = []
    battr: list[int] = []
    api: list[int] = []


class Native(_Obj):
    request: str | dict[str, Any] | None = None  # the Native Ads request, as a string or object
    ver: str | None = None
    api: list[int] = []
    battr: list[int] = []


class Deal(_Obj):
    id: str
    bidfloor: float = 0.0
    bidfloorcur: str = "USD"
    at: int | None = None
    wseat: list[str] = []
    wadomain: list[str] = []


class Pmp(_Obj):
    private_auction: int = 0
    deals: list[Deal] = []


class Imp(_Obj):
    id: str
    banner: Banner | None = None
    video: Video | None = None
    audio: Audio | None = None
    native: Native | None = None
    pmp: Pmp | None = None
    displaymanager: str | None = None
    displaymanagerver: str | None = None
    instl: int = 0
    tagid: str | None = None
    bidfloor: float = 0.0
    bidfloorcur: str = "USD"
    clickbrowser: int | None = None
    secure: int | None = None
    exp: int | None = None
    rwdd: int | None = None


class Publisher(_Obj):
    id: str | None = None
    name: str | None = None
    cat: list[str] = []
    domain: str | None = None


class Segment(_Obj):
    id: str | None = None
    name: str | None = None
    value: str | None = None


class Data(_Obj):
    id: str | None = None
    name: str | None = None
    segment: list[Segment] = []


class Content(_Obj):
    id: str | None = None
    title: str | None = None
    series: str | None = None
    genre: str | None = None
    url: str | None = None
    cat: list[str] = []
    context: int | None = None
    livestream: int | None = None
    language: str | None = None
    len: int | None = None
    data: list[Data] = []


class Site(_Obj):
    id: str | None = None
    name: str | None = None
    domain: str | None = None
    cat: list[str] = []
    sectioncat: list[str] = []
    pagecat: list[str] = []
    page: str | None = None
    ref: str | None = None
    mobile: int | None = None
    privacypolicy: int | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    keywords: str | None = None


class App(_Obj):
    id: str | None = None
    name: str | None = None
    bundle: str | None = None
    domain: str | None = None
    storeurl: str | None = None
    cat: list[str] = []
    sectioncat: list[str] = []
    pagecat: list[str] = []
    ver: str | None = None
    privacypolicy: int | None = None
    paid: int | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    keywords: str | None = None


class Dooh(_Obj):
    id: str | None = None
    name: str | None = None
    venuetype: list[str] = []
    venuetypetax: int | None = None
    publisher: Publisher | None = None
    domain: str | None = None
    keywords: str | None = None
    content: Content | None = None


class Geo(_Obj):
    lat: float | None = None
    lon: float | None = None
    type: int | None = None
    country: str | None = None  # ISO-3166-1 alpha-3
    region: str | None = None
    metro: str | None = None
    city: str | None = None
    zip: str | None = None
    utcoffset: int | None = None  # minutes


class Device(_Obj):
    ua: str | None = None
    geo: Geo | None = None
    dnt: int | None = None
    lmt: int | None = None
    ip: str | None = None
    ipv6: str | None = None
    devicetype: int | None = None
    make: str | None = None
    model: str | None = None
    os: str | None = None
    osv: str | None = None
    h: int | None = None
    w: int | None = None
    js: int | None = None
    language: str | None = None
    carrier: str | None = None
    mccmnc: str | None = None
    connectiontype: int | None = None
    ifa: str | None = None


class UserExt(_Obj):
    consent: str | None = None


class User(_Obj):
    id: str | None = None
    buyeruid: str | None = None
    yob: int | None = None
    gender: str | None = None
    keywords: str | None = None
    geo: Geo | None = None
    data: list[Data] = []
    consent: str | None = None  # 2.6; 2.5 has it in ext.consent
    ext: UserExt | None = None


class RegsExt(_Obj):
    gdpr: int | None = None
    us_privacy: str | None = None
    gpp: str | None = None
    gpp_sid: list[int] = []


class Regs(_Obj):
    coppa: int | None = None
    gdpr: int | None = None  # 2.6; 2.5 has it in ext.gdpr
    us_privacy: str | None = None  # 2.6; 2.5 has it in ext.us_privacy
    gpp: str | None = None
    gpp_sid: list[int] = []
    ext: RegsExt | None = None


class SupplyChainNode(_Obj):
    asi: str = ""
    sid: str = ""
    rid: str | None = None
    name: str | None = None
    domain: str | None = None
    hp: int | None = None


class SupplyChain(_Obj):
    complete: int = 0
    nodes: list[SupplyChainNode] = []
    ver: str = "1.0"


class SourceExt(_Obj):
    schain: SupplyChain | None = None


class Source(_Obj):
    fd: int | None = None
    tid: str | None = None
    pchain: str | None = None
    schain: SupplyChain | None = None  # 2.6; 2.5 has it in ext.schain
    ext: SourceExt | None = None


class BidRequest(_Obj):
    id: str
    imp: list[Imp]
    site: Site | None = None
    app: App | None = None
    dooh: Dooh | None = None
    device: Device | None = None
    user: User | None = None
    test: int = 0
    at: int = 2
    tmax: int | None = None
    wseat: list[str] = []
    bseat: list[str] = []
    allimps: int = 0
    cur: list[str] = []
    wlang: list[str] = []
    bcat: list[str] = []
    cattax: int | None = None
    badv: list[str] = []
    bapp: list[str] = []
    source: Source | None = None
    regs: Regs | None = None


# -- response -----------------------------------------------------------------------------------


class Bid(_Obj):
    id: str
    impid: str
    price: float
    nurl: str | None = None
    burl: str | None = None
    lurl: str | None = None
    adm: str | None = None
    adid: str | None = None
    adomain: list[str] = []
    cid: str | None = None
    crid: str | None = None
    cat: list[str] = []
    attr: list[int] = []
    dealid: str | None = None
    w: int | None = None
    h: int | None = None
    exp: int | None = None
    mtype: int | None = None  # 2.6: 1 banner, 2 video, 3 audio, 4 native


class SeatBid(_Obj):
    bid: list[Bid]
    seat: str | None = None
    group: int = 0


class BidResponse(_Obj):
    id: str
    seatbid: list[SeatBid] = []
    bidid: str | None = None
    cur: str | None = None
    nbr: int | None = None


# -- accessors over the 2.5 / 2.6 locations -----------------------------------------------------


def gdpr_applies(req: BidRequest) -> int | None:
    regs = req.regs
    if regs is None:
        return None
    if regs.gdpr is not None:
        return regs.gdpr
    return regs.ext.gdpr if regs.ext is not None else None


def consent_string(req: BidRequest) -> str | None:
    user = req.user
    if user is None:
        return None
    if user.consent:
        return user.consent
    return user.ext.consent if user.ext is not None else None


def us_privacy(req: BidRequest) -> str | None:
    regs = req.regs
    if regs is None:
        return None
    if regs.us_privacy:
        return regs.us_privacy
    return regs.ext.us_privacy if regs.ext is not None else None


def gpp(req: BidRequest) -> tuple[str | None, list[int]]:
    regs = req.regs
    if regs is None:
        return None, []
    if regs.gpp:
        return regs.gpp, regs.gpp_sid
    if regs.ext is not None and regs.ext.gpp:
        return regs.ext.gpp, regs.ext.gpp_sid
    return None, regs.gpp_sid


def schain(req: BidRequest) -> SupplyChain | None:
    src = req.source
    if src is None:
        return None
    if src.schain is not None:
        return src.schain
    return src.ext.schain if src.ext is not None else None


# -- no-bid reasons ------------------------------------------------------------------------------


class Nbr:
    """OpenRTB no-bid reason codes: list 5.24 of 2.5, extended in 2.6 (``BidResponse.nbr``)."""

    UNKNOWN: Final = 0
    TECHNICAL: Final = 1
    INVALID_REQUEST: Final = 2
    WEB_SPIDER: Final = 3
    NON_HUMAN: Final = 4
    DATACENTER_IP: Final = 5
    UNSUPPORTED_DEVICE: Final = 6
    BLOCKED_PUBLISHER: Final = 7
    UNMATCHED_USER: Final = 8
    DAILY_USER_CAP: Final = 9  # "daily reader cap met"
    DAILY_DOMAIN_CAP: Final = 10
    ADS_TXT_UNAVAILABLE: Final = 11
    ADS_TXT_VIOLATION: Final = 12
    ADS_CERT_UNAVAILABLE: Final = 13
    ADS_CERT_VIOLATION: Final = 14
    INSUFFICIENT_TIME: Final = 15
    INCOMPLETE_SCHAIN: Final = 16
    BLOCKED_SCHAIN_NODE: Final = 17


# -- encoding -----------------------------------------------------------------------------------

_encoder: Final = msgspec.json.Encoder()


def encode_response(resp: BidResponse) -> bytes:
    return _encoder.encode(resp)
