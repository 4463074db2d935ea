"""The user key in a bid's notice URLs: signed, a keyed hash of the device id, present only when
the request's privacy signals allow a user key (``bidder.privacy.decide``)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from bidder_world import KEY, NOON, banner_request, make_world

from fleet import signing

IFA = "AAAAAAAA-1111-2222-3333-444444444444"
TRACKER = "http://127.0.0.1:8090"  # PipelineSettings' default tracker URL
URL = re.compile(re.escape(TRACKER) + r"[^\"'\s<>]+")


def _request(consent: str = "", **extra: Any) -> dict[str, Any]:
    req = banner_request(**extra)
    req["device"]["ifa"] = IFA
    req["user"] = {"id": "exchange-user", "buyeruid": "ours-1"}
    if consent:
        req["user"]["consent"] = consent
    return req


def _notice_urls(body: bytes) -> dict[str, str]:
    """Every notice URL of the answer's one bid, by kind: nurl, burl, lurl and the impression
    and click URLs in its markup."""
    (bid,) = json.loads(body)["seatbid"][0]["bid"]
    urls = [bid["nurl"], bid["burl"], bid["lurl"], *URL.findall(bid["adm"])]
    return {urlsplit(u).path.rsplit("/", 1)[-1]: u.replace("&amp;", "&") for u in urls}


def _params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def test_every_notice_url_carries_the_signed_user_key() -> None:
    answer = make_world().handle(_request())
    assert answer.status == 200, answer.reason
    urls = _notice_urls(answer.body)
    assert set(urls) >= {"win", "bill", "loss", "imp", "click"}
    expected = signing.user_key(IFA, KEY)  # the device id first; secret: the signing key
    for kind, url in urls.items():
        params = _params(url)
        assert params["uk"] == expected, kind
        signed = signing.signed_params(params)
        assert signing.verify(signed, params["sig"], KEY, NOON), kind
        # the key is signed: another user's key in the same URL does not verify
        forged = {**signed, "uk": signing.user_key("someone else", KEY)}
        assert not signing.verify(forged, params["sig"], KEY, NOON), kind
    raw = answer.body.decode().lower()
    assert IFA.lower() not in raw and "ours-1" not in raw and "exchange-user" not in raw


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"regs": {"coppa": 1}}, "coppa"),
        ({"regs": {"gdpr": 1}}, "gdpr without consent"),
        ({"regs": {"gdpr": 1}, "consent": "not-a-tc-string"}, "gdpr, unreadable consent"),
    ],
)
def test_no_user_key_when_privacy_does_not_allow_one(extra: dict[str, Any], why: str) -> None:
    answer = make_world().handle(_request(**extra))
    assert answer.status == 200, (why, answer.reason)
    for kind, url in _notice_urls(answer.body).items():
        assert "uk" not in _params(url), (why, kind)
        assert "&uk=" not in url


def test_a_us_privacy_opt_out_keeps_the_key_for_frequency_caps() -> None:
    """An opt-out of sale withdraws personalisation, not frequency capping, which it allows
    (bidder.privacy: the US signals only withdraw personalisation): the key stays."""
    answer = make_world().handle(_request(regs={"us_privacy": "1YYN"}))
    assert answer.status == 200, answer.reason
    for url in _notice_urls(answer.body).values():
        assert _params(url)["uk"] == signing.user_key(IFA, KEY)


def test_the_key_follows_the_user_key_secret_and_is_never_the_raw_id() -> None:
    secret = b"a user key secret of its own"
    answer = make_world(user_key_secret=secret).handle(_request())
    uk = _params(_notice_urls(answer.body)["imp"])["uk"]
    assert uk == signing.user_key(IFA, secret) != signing.user_key(IFA, KEY)
    assert re.fullmatch(r"u[0-9a-f]{32}", uk)
    web = _request()
    del web["device"]["ifa"]  # a browser: our synced id
    uk = _params(_notice_urls(make_world().handle(web).body)["imp"])["uk"]
    assert uk == signing.user_key("b:ours-1", KEY)
