"""Notice URLs in: parse the query, verify the signature on the key set, the kind and the expiry,
and read the exchange's price macro strictly. Pure: time and keys are passed in.

Refusal causes (each counted):

    forged           no signature, a malformed one, or a signed parameter missing or unreadable
    altered          a well-formed signature that no key of the set made over these parameters
    expired          signed by us, but ``exp`` is not after ``now``
    wrong_path       signed by us for another endpoint (``ev`` is not the path)
    malformed        a parameter given twice, or a query that is not UTF-8
    price_missing    ``${AUCTION_PRICE}`` left unsubstituted or empty: no money moves
    price_invalid    a price that is not a plain decimal CPM
    price_above_bid  a clearing price above our bid: refused, no money moves
    unknown          a campaign, creative or currency the config database does not hold
    partner          a postback from a measurement partner not accepted

The first four answer 403, the others 400.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus

import msgspec

from fleet import signing
from tracker.errors import Refused

CAUSES: Final = (
    "forged",
    "altered",
    "expired",
    "wrong_path",
    "malformed",
    "price_missing",
    "price_invalid",
    "price_above_bid",
    "unknown",
    "partner",
)
MONEY_KINDS: Final = frozenset({"win", "bill"})  # a price above the bid is refused on these
PRICED_KINDS: Final = frozenset({"win", "bill", "loss", "imp"})
MAX_PRICE_MICROS: Final = 10**15  # a CPM of a billion units: beyond it, not a price
_DECIMAL: Final = re.compile(r"(0|[1-9][0-9]{0,9})(?:\.([0-9]{1,18}))?", re.ASCII)
_SIGNATURE: Final = re.compile(r"[0-9a-f]{32}", re.ASCII)
_REQUIRED: Final = (
    signing.KIND,
    signing.TXID,
    signing.CAMPAIGN,
    signing.CREATIVE,
    signing.BID,
    signing.CURRENCY,
    signing.TIMESTAMP,
    signing.EXPIRES,
)


class Notice(msgspec.Struct, frozen=True, gc=False):
    """A verified notice: the signed parameters of the bid, and what the exchange filled in.
    (A struct, not a dataclass: one is made per notice, and a frozen dataclass costs several
    times as much to make. Not tracked by the cyclic collector: its fields are strings,
    integers and a dict of strings, so it can be in no reference cycle.)"""

    kind: str
    txid: str
    campaign_id: int
    creative_id: int
    bid_micros: int  # our bid, CPM micros in ``currency``
    currency: str
    timestamp: int
    expires: int
    user_key: str  # "" when the bid carried none
    signed: dict[str, str]  # the signed parameters as received (to rebuild URLs)
    price_micros: int | None = None  # the clearing CPM in micros, None when not given
    price_state: str = "absent"  # "given", "absent" (no price parameter) or "missing" (macro)
    loss_reason: int = 0
    key_index: int = 0  # which key of the set signed it (0: the current one)


def _decode(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    if "+" not in text:  # a transaction id's colons, the one escape the bidder writes
        plain = text.replace("%3A", ":")
        if "%" not in plain:
            return plain
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        raise Refused("malformed", "a query parameter is not UTF-8") from None


def parse_query(query: str | bytes, max_fields: int = 64) -> dict[str, str]:
    """The query's parameters, percent-decoded (as ``parse_qsl`` decodes them, strictly). A
    parameter given twice is refused (which copy would count?), as is a query that is not
    ASCII or not UTF-8 once decoded, or one with more than ``max_fields`` parameters."""
    if isinstance(query, bytes):
        try:
            query = query.decode("ascii")
        except UnicodeDecodeError:
            raise Refused("malformed", "the query string is not ASCII") from None
    params: dict[str, str] = {}
    if not query:
        return params
    parts = query.split("&")
    if len(parts) > max_fields:
        raise Refused("malformed", f"more than {max_fields} query parameters")
    for part in parts:
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = _decode(raw_name)
        if name in params:
            raise Refused("malformed", f"parameter {name[:40]!r} is given twice")
        params[name] = _decode(raw_value)
    return params


def parse_price(raw: str | None) -> tuple[int | None, str]:
    """``(micros, state)`` of the ``price`` parameter: a plain decimal CPM ("1.93", "0.5",
    "12") to exact integer micros. A missing parameter is ``(None, "absent")``; an empty or
    unsubstituted macro is ``(None, "missing")``. Anything else that is not such a number (a
    sign, an exponent, more than six significant decimals, an encrypted price) is refused."""
    if raw is None:
        return None, "absent"
    text = raw.strip()
    if not text or "AUCTION_PRICE" in text or text.startswith("${"):
        return None, "missing"
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise Refused("price_invalid", f"price {raw[:40]!r} is not a decimal CPM")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > 6 and fraction[6:].strip("0"):
        raise Refused("price_invalid", f"price {raw[:40]!r} has more than six decimals")
    micros = int(whole) * 1_000_000 + int((fraction[:6] or "0").ljust(6, "0"))
    if micros > MAX_PRICE_MICROS:
        raise Refused("price_invalid", f"price {raw[:40]!r} is out of range")
    return micros, "given"


def _integer(params: dict[str, str], name: str) -> int:
    value = params[name]
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise Refused("forged", f"signed parameter {name!r} is not a whole number", 403)
    return int(value)


def verify(kind: str, params: dict[str, str], keys: signing.KeySet, now: float) -> Notice:
    """The notice of endpoint ``kind`` if its URL is ours, whole, unexpired and for this path;
    raises ``Refused`` with the cause otherwise. The price is read (and checked against the
    bid on win and bill) only once the signature holds."""
    signature = params.get(signing.SIGNATURE, "")
    if not _SIGNATURE.fullmatch(signature):
        raise Refused("forged", "no valid signature", 403)
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise Refused("forged", f"signed parameter(s) missing: {', '.join(missing)}", 403)
    signed = signing.signed_params(params)
    index = keys.key_index(signed, signature)
    if index is None:
        raise Refused("altered", "the signature does not match the parameters", 403)
    return _signed_notice(kind, params, signed, index, now)


def _signed_notice(
    kind: str, params: dict[str, str], signed: dict[str, str], index: int, now: float
) -> Notice:
    """The rest of ``verify`` once key ``index`` of the set is known to have signed ``signed``
    (the signed parameters of ``params``)."""
    if signed[signing.KIND] != kind:
        raise Refused("wrong_path", f"a {signed[signing.KIND]!r} URL called on /{kind}", 403)
    expires = _integer(signed, signing.EXPIRES)
    if not now < expires:
        raise Refused("expired", "the notice URL has expired", 403)
    campaign_id = _integer(signed, signing.CAMPAIGN)
    creative_id = _integer(signed, signing.CREATIVE)
    bid = _integer(signed, signing.BID)
    timestamp = _integer(signed, signing.TIMESTAMP)
    price, state = (None, "absent")
    if kind in PRICED_KINDS:
        price, state = parse_price(params.get(signing.PRICE))
    if price is not None and kind in MONEY_KINDS and price > bid:
        raise Refused(
            "price_above_bid", f"clearing price {price} micros is above our bid {bid}", 400
        )
    loss_reason = 0
    if kind == "loss":
        raw = params.get(signing.LOSS, "").strip()
        if raw.isascii() and raw.isdigit() and len(raw) <= 9:
            loss_reason = int(raw)
    return Notice(
        kind=kind,
        txid=signed[signing.TXID],
        campaign_id=campaign_id,
        creative_id=creative_id,
        bid_micros=bid,
        currency=signed[signing.CURRENCY],
        timestamp=timestamp,
        expires=expires,
        user_key=signed.get(signing.USER_KEY, ""),
        signed=signed,
        price_micros=price,
        price_state=state,
        loss_reason=loss_reason,
        key_index=index,
    )


_MAX_FIELDS: Final = 64
_SIGNED_NAMES: Final = signing.SIGNED


def python_read_notice(kind: str, query: str | bytes, keys: signing.KeySet, now: float) -> Notice:
    """``verify(kind, parse_query(query), keys, now)``, the same notice or the same refusal,
    in one pass over the query as the bidder writes it: no escape but ``%3A`` (a txid's
    colons), each parameter once, every signed one present, a well-formed signature. The
    canonical form is written out in one piece (the signed names are known, in code-point
    order: bid cid crid cur exp ts txid, then uk when given, then ev) and hashed once per key.
    Any other query, and any notice refused, goes through ``verify`` itself, so refusals and
    their causes do not depend on which path read it."""
    if isinstance(query, bytes):
        try:
            query = query.decode("ascii")
        except UnicodeDecodeError:
            raise Refused("malformed", "the query string is not ASCII") from None
    if "+" in query:
        return verify(kind, parse_query(query), keys, now)
    escapes = query.count("%")
    if escapes:
        if query.count("%3A") != escapes:
            return verify(kind, parse_query(query), keys, now)
        query = query.replace("%3A", ":")
    parts = query.split("&")
    params = {name: value for name, _, value in [part.partition("=") for part in parts]}
    if len(params) != len(parts) or len(parts) > _MAX_FIELDS or "" in params:
        # a parameter given twice, an empty one, too many: as parse_query reads (or refuses) it
        return verify(kind, parse_query(query), keys, now)
    signature = params.get(signing.SIGNATURE, "")
    try:
        bid = params[signing.BID]
        cid = params[signing.CAMPAIGN]
        crid = params[signing.CREATIVE]
        cur = params[signing.CURRENCY]
        exp = params[signing.EXPIRES]
        ts = params[signing.TIMESTAMP]
        txid = params[signing.TXID]
        ev = params[signing.KIND]
    except KeyError:
        return verify(kind, params, keys, now)
    if len(signature) != 32 or not _SIGNATURE.fullmatch(signature):
        return verify(kind, params, keys, now)
    form = (
        f"3:bid{len(bid)}:{bid}3:cid{len(cid)}:{cid}4:crid{len(crid)}:{crid}"
        f"3:cur{len(cur)}:{cur}3:exp{len(exp)}:{exp}2:ts{len(ts)}:{ts}4:txid{len(txid)}:{txid}"
    )
    uk = params.get(signing.USER_KEY)
    if uk is not None:
        form += f"2:uk{len(uk)}:{uk}"
    form += f"2:ev{len(ev)}:{ev}"
    index = keys.match(form.encode("utf-8", "surrogatepass"), signature)
    if (
        index is None
        or ev != kind
        or not (exp + cid + crid + bid + ts).isascii()
        or not (exp.isdigit() and cid.isdigit() and crid.isdigit() and bid.isdigit())
        or not ts.isdigit()
        or max(len(exp), len(cid), len(crid), len(bid), len(ts)) > 19
    ):
        return verify(kind, params, keys, now)
    expires = int(exp)
    if not now < expires:
        return verify(kind, params, keys, now)
    bid_micros = int(bid)
    price, state = (None, "absent")
    if kind in PRICED_KINDS:
        price, state = parse_price(params.get(signing.PRICE))
        if price is not None and price > bid_micros and kind in MONEY_KINDS:
            return verify(kind, params, keys, now)
    loss_reason = 0
    if kind == "loss":
        raw = params.get(signing.LOSS, "").strip()
        if raw.isascii() and raw.isdigit() and len(raw) <= 9:
            loss_reason = int(raw)
    return Notice(
        kind,
        txid,
        int(cid),
        int(crid),
        bid_micros,
        cur,
        int(ts),
        expires,
        "" if uk is None else uk,
        {name: value for name, value in params.items() if name in _SIGNED_NAMES},
        price,
        state,
        loss_reason,
        index,
    )
