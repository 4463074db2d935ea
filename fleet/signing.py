"""Signed notice and click URLs: an HMAC-SHA256 over the query parameters, with an expiry.

The bidder puts these URLs in its bids (nurl, burl, lurl, impression pixel, click redirect);
the tracker verifies them, so nobody can forge a win, a billing notice or a click. Query
parameters (all strings):

    ev     the endpoint the URL is for: win, bill, loss, imp, click (signed, so a win URL cannot
           be replayed as a click; the tracker checks it equals the path it was called on)
    txid   the transaction id, ``<request id>:<imp id>:<bidder id>``
    cid    campaign id              crid   creative id
    bid    our bid, CPM micros in ``cur``          cur   the bid currency
    ts     bid time, whole seconds since the epoch
    exp    expiry, whole seconds since the epoch: later notices are rejected
    sig    the signature: base64url (no padding) HMAC-SHA256 of the canonical form of every
           other parameter except the exchange macros below
    price  ``${AUCTION_PRICE}``, filled in by the exchange (unsigned)
    loss   ``${AUCTION_LOSS}``, filled in by the exchange (unsigned)

The canonical form is the parameters sorted by name, each written ``<len>:<name><len>:<value>``
(lengths in characters), concatenated: unambiguous whatever the values contain.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

KIND: Final = "ev"
TXID: Final = "txid"
CAMPAIGN: Final = "cid"
CREATIVE: Final = "crid"
BID: Final = "bid"
CURRENCY: Final = "cur"
TIMESTAMP: Final = "ts"
EXPIRES: Final = "exp"
SIGNATURE: Final = "sig"
PRICE: Final = "price"
LOSS: Final = "loss"

# Parameters outside the signature: the signature itself and what the exchange fills in.
UNSIGNED: Final = frozenset({SIGNATURE, PRICE, LOSS})
KINDS: Final = ("win", "bill", "loss", "imp", "click")


def canonical(params: Mapping[str, str]) -> bytes:
    parts = []
    for name in sorted(params):
        if name in UNSIGNED:
            continue
        value = params[name]
        parts.append(f"{len(name)}:{name}{len(value)}:{value}")
    return "".join(parts).encode("utf-8", "surrogatepass")


def sign(params: Mapping[str, str], key: bytes) -> str:
    """The signature of ``params`` (names in ``UNSIGNED`` are left out)."""
    if not key:
        raise ValueError("the signing key must not be empty")
    digest = hmac.digest(key, canonical(params), hashlib.sha256)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(params: Mapping[str, str], signature: str, key: bytes, now: float) -> bool:
    """True when ``signature`` matches (constant-time) and ``exp`` is present and after ``now``."""
    if not key or not signature or not signature.isascii():
        return False
    try:
        expires = int(params[EXPIRES])
    except (KeyError, ValueError):
        return False
    if now >= expires:
        return False
    return hmac.compare_digest(sign(params, key), signature)


def _quote(text: str) -> str:
    return text if text.isalnum() and text.isascii() else quote(text, safe="")


def signed_query(
    params: Mapping[str, str], key: bytes, macros: Mapping[str, str] | None = None
) -> str:
    """``a=1&b=2&sig=...`` followed by the exchange ``macros`` verbatim (``price=${AUCTION_PRICE}``)
    so that the exchange can substitute them."""
    query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params.items())
    query += f"&{SIGNATURE}={sign(params, key)}"
    if macros:
        query += "".join(f"&{k}={v}" for k, v in macros.items())
    return query


def _macros(kind: str) -> str:
    """The exchange macros a notice takes: the clearing price on win, bill, loss and imp, the
    loss reason on loss."""
    if kind == "click":
        return ""
    if kind == "loss":
        return f"&{PRICE}=${{AUCTION_PRICE}}&{LOSS}=${{AUCTION_LOSS}}"
    return f"&{PRICE}=${{AUCTION_PRICE}}"


_MACROS: Final = {kind: _macros(kind) for kind in KINDS}
_QUOTED_NAMES: Final = {
    k: k for k in (KIND, TXID, CAMPAIGN, CREATIVE, BID, CURRENCY, TIMESTAMP, EXPIRES)
}
_BLOCK: Final = 64  # SHA-256 block size in bytes


def notice_url(base_url: str, kind: str, params: Mapping[str, str], key: bytes) -> str:
    """``<base_url>/<kind>?ev=<kind>&...&sig=...`` plus the exchange macros that notice takes:
    ``price=${AUCTION_PRICE}`` on win, bill, loss and imp; ``loss=${AUCTION_LOSS}`` on loss.
    The tracker rebuilds imp and click URLs from a win notice's parameters the same way."""
    signed = {KIND: kind, **params}
    return f"{base_url.rstrip('/')}/{kind}?{signed_query(signed, key)}{_macros(kind)}"


class Signer:
    """``sign``/``verify``/``notice_url`` with the key's HMAC state prepared once; builds all
    the notice URLs of a bid sharing the work (the hot path signs five per bid)."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the signing key must not be empty")
        self._key = key
        # HMAC (RFC 2104) from its two keyed SHA-256 states, copied per message: the same
        # digest as hmac.digest without the hmac module's Python-level wrapper per call
        block = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
        block = block.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def _mac(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return base64.urlsafe_b64encode(outer.digest()).rstrip(b"=").decode("ascii")

    def sign(self, params: Mapping[str, str]) -> str:
        return self._mac(canonical(params))

    def verify(self, params: Mapping[str, str], signature: str, now: float) -> bool:
        return verify(params, signature, self._key, now)

    def notice_urls(
        self, base_url: str, params: Mapping[str, str], kinds: tuple[str, ...] = KINDS
    ) -> dict[str, str]:
        """The URL of each notice kind for one bid; equal to ``notice_url`` for each."""
        base = base_url.rstrip("/")
        query = "&".join(
            f"{_QUOTED_NAMES.get(k) or _quote(k)}={_quote(v)}" for k, v in params.items()
        )
        before: list[str] = []
        after: list[str] = []
        for name in sorted(params):
            if name in UNSIGNED or name == KIND:
                continue
            value = params[name]
            (before if name < KIND else after).append(f"{len(name)}:{name}{len(value)}:{value}")
        head, tail = "".join(before), "".join(after)
        urls = {}
        for kind in kinds:
            message = f"{head}{len(KIND)}:{KIND}{len(kind)}:{kind}{tail}"
            sig = self._mac(message.encode("utf-8", "surrogatepass"))
            macros = _MACROS.get(kind)
            if macros is None:
                macros = _macros(kind)
            urls[kind] = f"{base}/{kind}?{KIND}={_quote(kind)}&{query}&{SIGNATURE}={sig}{macros}"
        return urls


def render_markup(markup: str, imp_url: str, click_url: str) -> str:
    """Creative markup with our ``${IMP_URL}`` and ``${CLICK_URL}`` filled in; the exchange's
    own macros (``${AUCTION_PRICE}``, ...) stay for the exchange."""
    return markup.replace("${IMP_URL}", imp_url).replace("${CLICK_URL}", click_url)
