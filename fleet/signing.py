"""Signed notice and click URLs: a keyed BLAKE2s MAC over the query parameters, with an expiry.

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
    uk     optional: the user key (``user_key``: a keyed hash, never the raw device id), only
           when the request's privacy signals allow it; frequency counters and attribution.
           Every notice URL of the bid carries it (signed with the rest): the impression
           counts it, the billing notice when no pixel fires, and in nurl-only mode the
           tracker rebuilds the impression and click URLs from the win notice's parameters
    sig    the signature: 32 lowercase hex digits, the 16-byte BLAKE2s MAC (RFC 7693: BLAKE2s
           keyed, digest size 16) of the canonical form of every other parameter except the
           exchange macros below; its key is the plain 32-byte BLAKE2s digest of the signing key
    price  ``${AUCTION_PRICE}``, filled in by the exchange (unsigned)
    loss   ``${AUCTION_LOSS}``, filled in by the exchange (unsigned)

The canonical form is each signed parameter written ``<len>:<name><len>:<value>`` (lengths in
characters), concatenated: first every one but ``ev`` in code-point order of their names, then
``ev`` last, all encoded in UTF-8. It is unambiguous whatever the values contain; ``ev`` comes
last so that the notices of one bid share the hashing of everything else.

Values are percent-encoded in the URL (every character but ASCII letters, digits and ``-._~``,
so a ``:`` in ``txid`` is sent as ``%3A``); the tracker verifies the decoded values.

Key rotation: a ``KeySet`` holds the current key, which signs, and the previous keys, which still
verify, so that the notices already in flight stay valid while the keys rotate. The URL format
does not change: the verifier tries the current key, then each previous key (constant-time
comparisons, a handful of keys at most).

Only the parameters named above are signed; a URL that carries any other parameter (one a
measurement partner appended, say) is verified on these alone with ``signed_params``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Final, NoReturn
from urllib.parse import quote

KIND: Final = "ev"
TXID: Final = "txid"
CAMPAIGN: Final = "cid"
CREATIVE: Final = "crid"
BID: Final = "bid"
CURRENCY: Final = "cur"
TIMESTAMP: Final = "ts"
EXPIRES: Final = "exp"
USER_KEY: Final = "uk"
SIGNATURE: Final = "sig"
PRICE: Final = "price"
LOSS: Final = "loss"

# Parameters outside the signature: the signature itself and what the exchange fills in.
UNSIGNED: Final = frozenset({SIGNATURE, PRICE, LOSS})
KINDS: Final = ("win", "bill", "loss", "imp", "click")
# The development key, used only where a service is told to allow it
# (RTBFLEET_*_ALLOW_DEV_SIGNING_KEY): anybody can forge notices with it. Declared once, so that a
# development bidder and tracker agree.
DEV_SIGNING_KEY: Final = "rtbfleet-development-signing-key-not-secret"
# Every parameter the bidder signs: a notice URL's signed form is exactly these, when present.
SIGNED: Final = frozenset(
    {KIND, TXID, CAMPAIGN, CREATIVE, BID, CURRENCY, TIMESTAMP, EXPIRES, USER_KEY}
)
SIGNATURE_BYTES: Final = 16


def _field(name: str, value: str) -> str:
    return f"{len(name)}:{name}{len(value)}:{value}"


def _encode(form: str) -> bytes:
    return form.encode("utf-8", "surrogatepass")


def _shared_form(params: Mapping[str, str]) -> str:
    """The canonical form of the signed parameters but ``ev``: what the notices of a bid share.
    (``_field`` written inline: the tracker builds this once per notice it verifies.)"""
    return "".join(
        [
            f"{len(name)}:{name}{len(value)}:{value}"
            for name, value in sorted(params.items())
            if name != KIND and name not in UNSIGNED
        ]
    )


def canonical(params: Mapping[str, str]) -> bytes:
    form = _shared_form(params)
    if KIND in params:
        form += _field(KIND, params[KIND])
    return _encode(form)


def _keyed_state(key: bytes) -> hashlib.blake2s:
    if not key:
        raise ValueError("the signing key must not be empty")
    # BLAKE2s takes keys of up to 32 bytes: key it with a digest of the signing key, any length
    mac_key = hashlib.blake2s(key).digest()
    return hashlib.blake2s(key=mac_key, digest_size=SIGNATURE_BYTES)


def _mac(keyed: hashlib.blake2s, message: bytes) -> str:
    state = keyed.copy()
    state.update(message)
    return state.hexdigest()


def sign(params: Mapping[str, str], key: bytes) -> str:
    """The signature of ``params`` (names in ``UNSIGNED`` are left out)."""
    return _mac(_keyed_state(key), canonical(params))


def _unexpired(params: Mapping[str, str], now: float) -> bool:
    try:
        return now < int(params[EXPIRES])
    except (KeyError, ValueError):
        return False


def verify(params: Mapping[str, str], signature: str, key: bytes, now: float) -> bool:
    """True when ``signature`` matches (constant-time) and ``exp`` is present and after ``now``."""
    if not key or not signature or not signature.isascii() or not _unexpired(params, now):
        return False
    return hmac.compare_digest(sign(params, key), signature)


# A value made of these needs no percent-encoding but of its colons (the common transaction id)
_PLAIN_OR_COLON: Final = re.compile(r"[-\w.~:]*", re.ASCII)


def _quote(text: str) -> str:
    """``text`` percent-encoded as ``quote(text, safe="")`` does, without its cost when there
    is nothing to encode but colons."""
    if text.isalnum() and text.isascii():
        return text
    if _PLAIN_OR_COLON.fullmatch(text):
        return text.replace(":", "%3A")
    return quote(text, safe="")


def _macros(kind: str) -> str:
    """The exchange macros a notice takes: the clearing price on win, bill, loss and imp, the
    loss reason on loss."""
    if kind == "click":
        return ""
    if kind == "loss":
        return f"&{PRICE}=${{AUCTION_PRICE}}&{LOSS}=${{AUCTION_LOSS}}"
    return f"&{PRICE}=${{AUCTION_PRICE}}"


# Per kind: its URL's path and ``ev``, the end of its canonical form (``ev`` last) and the
# exchange macros its URL ends with
_NOTICES: Final = {
    kind: (f"/{kind}?{KIND}={kind}", _encode(_field(KIND, kind)), _macros(kind)) for kind in KINDS
}


def _unknown(kind: str) -> NoReturn:
    raise ValueError(f"unknown notice kind {kind!r}; expected one of {KINDS}")


def notice_url(base_url: str, kind: str, params: Mapping[str, str], key: bytes) -> str:
    """``<base_url>/<kind>?ev=<kind>&...&sig=...`` plus the exchange macros that notice takes:
    ``price=${AUCTION_PRICE}`` on win, bill, loss and imp; ``loss=${AUCTION_LOSS}`` on loss.
    An ``ev`` in ``params`` is replaced by ``kind``. The tracker rebuilds imp and click URLs
    from a win notice's parameters the same way."""
    return Signer(key).notice_urls(base_url, params, (kind,))[kind]


class Signer:
    """``sign``/``verify``/``notice_url`` with the keyed MAC state prepared once; builds all the
    notice URLs of a bid hashing what they share once (the hot path signs five per bid)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = _keyed_state(key)

    def sign(self, params: Mapping[str, str]) -> str:
        return _mac(self._keyed, canonical(params))

    def verify(self, params: Mapping[str, str], signature: str, now: float) -> bool:
        if not signature or not signature.isascii() or not _unexpired(params, now):
            return False
        return hmac.compare_digest(self.sign(params), signature)

    def notice_urls(
        self, base_url: str, params: Mapping[str, str], kinds: tuple[str, ...] = KINDS
    ) -> dict[str, str]:
        """The URL of each notice kind for one bid; equal to ``notice_url`` for each."""
        query = "".join(f"&{_quote(k)}={_quote(v)}" for k, v in params.items() if k != KIND)
        shared = self._keyed.copy()
        shared.update(_encode(_shared_form(params)))
        return self._urls(base_url.rstrip("/"), kinds, shared, query)

    def bid_notice_urls(
        self,
        base_url: str,
        kinds: tuple[str, ...],
        *,
        txid: str,
        campaign_id: int,
        creative_id: int,
        price: int,
        currency: str,
        timestamp: int,
        expires: int,
        user_key: str = "",
    ) -> dict[str, str]:
        """``notice_urls`` of the parameters of a bid, named in that order (txid, cid, crid, bid,
        cur, ts, exp, then uk when ``user_key`` is not empty), written out in one piece: the bid
        path's share of the work."""
        cid, crid, bid, ts, exp = (
            str(campaign_id),
            str(creative_id),
            str(price),
            str(timestamp),
            str(expires),
        )
        # the canonical form but ev: the names in code-point order (bid cid crid cur exp ts txid)
        form = (
            f"3:bid{len(bid)}:{bid}3:cid{len(cid)}:{cid}4:crid{len(crid)}:{crid}"
            f"3:cur{len(currency)}:{currency}3:exp{len(exp)}:{exp}2:ts{len(ts)}:{ts}"
            f"4:txid{len(txid)}:{txid}"
        )
        if user_key:  # "uk" sorts after "txid"
            form += _field(USER_KEY, user_key)
        shared = self._keyed.copy()
        shared.update(_encode(form))
        # decimal integers need no percent-encoding
        query = (
            f"&txid={_quote(txid)}&cid={cid}&crid={crid}&bid={bid}&cur={_quote(currency)}"
            f"&ts={ts}&exp={exp}"
        )
        if user_key:
            query += f"&{USER_KEY}={_quote(user_key)}"
        return self._urls(base_url.rstrip("/"), kinds, shared, query)

    @staticmethod
    def _urls(
        base: str, kinds: tuple[str, ...], shared: hashlib.blake2s, query: str
    ) -> dict[str, str]:
        urls = {}
        query += f"&{SIGNATURE}="
        for kind in kinds:
            path, kind_form, macros = _NOTICES.get(kind) or _unknown(kind)
            state = shared.copy()
            state.update(kind_form)
            urls[kind] = f"{base}{path}{query}{state.hexdigest()}{macros}"
        return urls


def signed_params(params: Mapping[str, str]) -> dict[str, str]:
    """The parameters of ``params`` that the bidder signs (``SIGNED``): a URL's other
    parameters (exchange macros, what a measurement partner adds) are not part of it."""
    return {name: value for name, value in params.items() if name in SIGNED}


class KeySet:
    """The current signing key and the previous ones, for key rotation: ``current`` signs;
    ``current`` and every key in ``previous`` verify. Keys must not be empty."""

    def __init__(self, current: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self.signer = Signer(current)
        self._verifiers = (self.signer, *(Signer(key) for key in previous if key != current))
        self._keyed_states = tuple(signer._keyed for signer in self._verifiers)

    def __len__(self) -> int:
        return len(self._verifiers)

    def key_index(self, params: Mapping[str, str], signature: str) -> int | None:
        """Which key signed ``params`` (0: the current one), ignoring the expiry; None when
        no key of the set did. Tries every key, so the time taken tells nothing."""
        if not signature or not signature.isascii() or len(signature) != 2 * SIGNATURE_BYTES:
            return None
        return self.match(canonical(params), signature)

    def match(self, form: bytes, signature: str) -> int | None:
        """``key_index`` of a canonical form already written out (a verifier that reads the
        parameters of a notice URL writes it in one piece). Tries every key, as it does."""
        found = None
        for index, keyed in enumerate(self._keyed_states):
            state = keyed.copy()
            state.update(form)
            if hmac.compare_digest(state.hexdigest(), signature) and found is None:
                found = index
        return found

    def verify(self, params: Mapping[str, str], signature: str, now: float) -> bool:
        """``Signer.verify`` under any key of the set."""
        if not _unexpired(params, now):
            return False
        return self.key_index(params, signature) is not None


def _user_key_state(secret: bytes) -> hashlib.blake2s:
    if not secret:
        raise ValueError("the user key secret must not be empty")
    mac_key = hashlib.blake2s(secret).digest()
    return hashlib.blake2s(key=mac_key, digest_size=SIGNATURE_BYTES, person=b"rtbf-uk")


def _user_key(keyed: hashlib.blake2s, device_id: str) -> str:
    state = keyed.copy()
    state.update(device_id.strip().lower().encode("utf-8", "surrogatepass"))
    return "u" + state.hexdigest()


def user_key(device_id: str, secret: bytes) -> str:
    """The user key of a device id (an IFA, a buyeruid): ``u`` + 32 hex digits of a keyed
    BLAKE2s hash, so that counters and attribution match a device without holding its id."""
    return _user_key(_user_key_state(secret), device_id)


class UserKeys:
    """``user_key`` with the keyed state prepared once (the bid path keys every request whose
    privacy signals allow it)."""

    def __init__(self, secret: bytes) -> None:
        self._keyed = _user_key_state(secret)

    def __call__(self, device_id: str) -> str:
        return _user_key(self._keyed, device_id)


def render_markup(markup: str, imp_url: str, click_url: str) -> str:
    """Creative markup with our ``${IMP_URL}`` and ``${CLICK_URL}`` filled in; the exchange's
    own macros (``${AUCTION_PRICE}``, ...) stay for the exchange."""
    return markup.replace("${IMP_URL}", imp_url).replace("${CLICK_URL}", click_url)
