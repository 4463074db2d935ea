from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet import signing

KEY = b"0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0
PARAMS = {
    "ev": "win",
    "txid": "req:1:bidder-0",
    "cid": "12",
    "crid": "58",
    "bid": "2400000",
    "cur": "USD",
    "ts": str(int(NOW)),
    "exp": str(int(NOW) + 3600),
}


def test_a_signature_verifies() -> None:
    sig = signing.sign(PARAMS, KEY)
    assert signing.verify(PARAMS, sig, KEY, NOW)
    assert signing.verify(dict(reversed(list(PARAMS.items()))), sig, KEY, NOW)  # order-free


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_tampering_with_any_parameter_is_rejected(name: str) -> None:
    sig = signing.sign(PARAMS, KEY)
    assert not signing.verify({**PARAMS, name: PARAMS[name] + "0"}, sig, KEY, NOW)
    assert not signing.verify({k: v for k, v in PARAMS.items() if k != name}, sig, KEY, NOW)


def test_added_parameters_wrong_keys_and_bad_signatures_are_rejected() -> None:
    sig = signing.sign(PARAMS, KEY)
    assert not signing.verify({**PARAMS, "extra": "1"}, sig, KEY, NOW)
    assert not signing.verify(PARAMS, sig, b"another key of thirty-two bytes!", NOW)
    assert not signing.verify(PARAMS, sig[:-1] + ("A" if sig[-1] != "A" else "B"), KEY, NOW)
    assert not signing.verify(PARAMS, "", KEY, NOW)
    assert not signing.verify(PARAMS, "é" * 43, KEY, NOW)
    assert not signing.verify(PARAMS, sig, b"", NOW)


def test_exchange_macros_are_outside_the_signature() -> None:
    sig = signing.sign(PARAMS, KEY)
    filled = {**PARAMS, "price": "1.93", "loss": "102"}
    assert signing.verify(filled, sig, KEY, NOW)


def test_expired_or_undated_notices_are_rejected() -> None:
    sig = signing.sign(PARAMS, KEY)
    assert not signing.verify(PARAMS, sig, KEY, NOW + 3600)
    assert not signing.verify(PARAMS, sig, KEY, NOW + 10**6)
    undated = {k: v for k, v in PARAMS.items() if k != "exp"}
    assert not signing.verify(undated, signing.sign(undated, KEY), KEY, NOW)
    garbled = {**PARAMS, "exp": "soon"}
    assert not signing.verify(garbled, signing.sign(garbled, KEY), KEY, NOW)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError):
        signing.sign(PARAMS, b"")
    with pytest.raises(ValueError):
        signing.Signer(b"")


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=5), st.text(min_size=1), st.text())
def test_canonical_form_is_unambiguous(params: dict[str, str], name: str, value: str) -> None:
    moved = dict(params)
    if name in moved or name in signing.UNSIGNED:
        return
    moved[name] = value
    assert signing.canonical(moved) != signing.canonical(params)


def test_signer_urls_equal_notice_url_and_round_trip() -> None:
    signer = signing.Signer(KEY)
    params = {k: v for k, v in PARAMS.items() if k != "ev"}
    params["txid"] = "id with spaces & symbols=:/?#"
    urls = signer.notice_urls("https://t.example/", params)
    assert set(urls) == set(signing.KINDS)
    for kind, url in urls.items():
        assert url == signing.notice_url("https://t.example", kind, params, KEY)
        parts = urlsplit(url)
        assert parts.path == f"/{kind}"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        sig = query.pop("sig")
        assert query["ev"] == kind and query["txid"] == params["txid"]
        assert signing.verify(query, sig, KEY, NOW)
        # a URL for one kind cannot be replayed as another
        other = "click" if kind != "click" else "win"
        assert not signing.verify({**query, "ev": other}, sig, KEY, NOW)
    assert urls["win"].endswith("&price=${AUCTION_PRICE}")
    assert urls["loss"].endswith("&price=${AUCTION_PRICE}&loss=${AUCTION_LOSS}")
    assert "${" not in urls["click"]


def test_render_markup_fills_our_macros_only() -> None:
    out = signing.render_markup(
        '<a href="${CLICK_URL}">${AUCTION_PRICE}<img src="${IMP_URL}">', "I", "C"
    )
    assert out == '<a href="C">${AUCTION_PRICE}<img src="I">'


@pytest.mark.parametrize("length", [1, 16, 32, 63, 64, 65, 200])
def test_signer_signatures_equal_sign_for_any_key_length(length: int) -> None:
    key = bytes((7 * i + 3) % 256 for i in range(length))
    params = {"ev": "win", "txid": "r-1:1:bidder-0", "cid": "7", "exp": "2000000000"}
    signer = signing.Signer(key)
    assert signer.sign(params) == signing.sign(params, key)
    assert signer.sign(dict(params, cid="8")) != signing.sign(params, key)
    url = signer.notice_urls("http://t.example/", {k: v for k, v in params.items() if k != "ev"})
    assert url["win"] == signing.notice_url(
        "http://t.example/", "win", {k: v for k, v in params.items() if k != "ev"}, key
    )


def test_signature_follows_the_documented_scheme() -> None:
    # the tracker's contract (the module docstring), computed independently
    form = "".join(f"{len(n)}:{n}{len(PARAMS[n])}:{PARAMS[n]}" for n in sorted(PARAMS) if n != "ev")
    form += "2:ev3:win"
    mac_key = hashlib.blake2s(KEY).digest()
    want = hashlib.blake2s(form.encode(), key=mac_key, digest_size=16).hexdigest()
    assert signing.sign(PARAMS, KEY) == signing.Signer(KEY).sign(PARAMS) == want
    assert len(want) * 4 >= 128
    assert signing.canonical(PARAMS) == form.encode()


def test_signer_verify_agrees_with_verify() -> None:
    signer = signing.Signer(KEY)
    sig = signer.sign(PARAMS)
    assert signer.verify(PARAMS, sig, NOW) and signing.verify(PARAMS, sig, KEY, NOW)
    assert not signer.verify(PARAMS, sig, NOW + 3600)
    assert not signer.verify({**PARAMS, "ev": "click"}, sig, NOW)
    assert not signer.verify(PARAMS, sig.upper(), NOW)
    assert not signer.verify(PARAMS, "é" * 32, NOW)
    assert not signing.Signer(b"another key of thirty-two bytes!").verify(PARAMS, sig, NOW)


def test_unknown_notice_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        signing.notice_url("http://t.example", "conversion", PARAMS, KEY)


# any text but lone surrogates, which URLs cannot carry
_char = st.characters(exclude_categories=["Cs"])
_text = st.text(_char)
_names = st.text(_char, min_size=1).filter(
    lambda name: name not in signing.UNSIGNED and name != "ev"
)


@given(st.dictionaries(_names, _text, max_size=6))
def test_any_parameters_survive_the_url_and_verify(params: dict[str, str]) -> None:
    params["exp"] = str(int(NOW) + 60)
    url = signing.Signer(KEY).notice_urls("http://t.example/", params, ("imp",))["imp"]
    parts = urlsplit(url)
    assert parts.path == "/imp"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    assert query.pop("price") == "${AUCTION_PRICE}"
    sig = query.pop("sig")
    assert query == {"ev": "imp", **params}
    assert signing.verify(query, sig, KEY, NOW)


_ids = st.integers(min_value=-(10**12), max_value=10**12)


@given(
    _text,
    _ids,
    _ids,
    _ids,
    st.one_of(st.just("USD"), _text),
    _ids,
    _ids,
    st.sampled_from([signing.KINDS, ("win", "bill", "loss")]),
    st.one_of(st.just(""), st.just("u" + "0f" * 16), _text),
)
def test_bid_notice_urls_equal_notice_urls(
    txid: str,
    campaign_id: int,
    creative_id: int,
    price: int,
    currency: str,
    timestamp: int,
    expires: int,
    kinds: tuple[str, ...],
    user_key: str,
) -> None:
    signer = signing.Signer(KEY)
    urls = signer.bid_notice_urls(
        "https://t.example/",
        kinds,
        txid=txid,
        campaign_id=campaign_id,
        creative_id=creative_id,
        price=price,
        currency=currency,
        timestamp=timestamp,
        expires=expires,
        user_key=user_key,
    )
    params = {
        "txid": txid,
        "cid": str(campaign_id),
        "crid": str(creative_id),
        "bid": str(price),
        "cur": currency,
        "ts": str(timestamp),
        "exp": str(expires),
    }
    if user_key:  # no user key: no uk parameter at all
        params["uk"] = user_key
    assert urls == signer.notice_urls("https://t.example", params, kinds)


def test_user_keys_are_keyed_hashes_of_the_normalised_id() -> None:
    keys = signing.UserKeys(b"a user key secret")
    ifa = "AAAAAAAA-1111-2222-3333-444444444444"
    key = keys(ifa)
    assert key == signing.user_key(ifa, b"a user key secret") == keys(f" {ifa.lower()} ")
    assert key.startswith("u") and len(key) == 33 and ifa.lower() not in key
    assert key != signing.user_key(ifa, b"another user key secret")
    with pytest.raises(ValueError):
        signing.UserKeys(b"")
