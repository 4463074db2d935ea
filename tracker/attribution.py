"""Attribution rules, pure: which click (if any) an install or an in-app event belongs to.

- an install is attributed to the click whose click id it carries, when that click is within its
  campaign's attribution window;
- otherwise to the last click from the same device (user key) within that click's campaign's
  window;
- an in-app event is attributed when its device has an attributed install of the same app whose
  campaign's window still covers the event (measured from the install);
- everything else is organic.

Installs are counted once per device and app: a second install postback is a duplicate, whatever
it carries. Times are seconds since the epoch (fleet time), passed in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

Rule = Literal["click_id", "last_click", "organic"]
DEFAULT_WINDOW_SECONDS: Final = 7 * 86400
CLICK_ID_BYTES: Final = 12


def click_id_for(txid: str, secret: bytes) -> str:
    """The click id of a transaction's click: ``c`` + 24 hex digits of a keyed hash of the txid.
    One per transaction (a second click on the same ad is the same click), not guessable without
    the secret, and derivable again from a verified click URL."""
    digest = hashlib.blake2s(
        txid.encode("utf-8", "surrogatepass"),
        key=hashlib.blake2s(secret).digest(),
        digest_size=CLICK_ID_BYTES,
        person=b"rtbf-cid",
    )
    return "c" + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Click:
    click_id: str
    txid: str
    campaign_id: int
    creative_id: int
    user_key: str  # "" when unknown
    clicked_at: float
    window_seconds: int  # the attribution window of the click's campaign


@dataclass(frozen=True, slots=True)
class Install:
    user_key: str
    app: str
    attributed: bool
    click_id: str
    txid: str
    campaign_id: int  # 0 when organic
    creative_id: int
    installed_at: float
    window_seconds: int  # of the install's campaign (attributed installs)


@dataclass(frozen=True, slots=True)
class Attribution:
    attributed: bool
    rule: Rule
    click_id: str = ""
    txid: str = ""
    campaign_id: int = 0
    creative_id: int = 0

    @staticmethod
    def organic() -> Attribution:
        return Attribution(False, "organic")


def _within(click: Click, now: float) -> bool:
    return click.clicked_at <= now < click.clicked_at + click.window_seconds


def attribute_install(
    *, by_click_id: Click | None, last_click: Click | None, now: float
) -> Attribution:
    """The install's attribution from the click its click id names (looked up, None when the
    postback carries none or an unknown one) and the device's last click (None when unknown)."""
    for click, rule in ((by_click_id, "click_id"), (last_click, "last_click")):
        if click is not None and _within(click, now):
            return Attribution(
                True,
                rule,  # type: ignore[arg-type]
                click.click_id,
                click.txid,
                click.campaign_id,
                click.creative_id,
            )
    return Attribution.organic()


def attribute_event(*, install: Install | None, now: float) -> Attribution:
    """An in-app event's attribution from the device's install of the app (None when none)."""
    if install is None or not install.attributed:
        return Attribution.organic()
    if not install.installed_at <= now < install.installed_at + install.window_seconds:
        return Attribution.organic()
    return Attribution(
        True,
        "click_id" if install.click_id else "last_click",
        install.click_id,
        install.txid,
        install.campaign_id,
        install.creative_id,
    )


def app_key(app_param: str, advertiser_id: int | None) -> str:
    """What installs are deduplicated on besides the device: the app the partner names, else
    the advertiser of the attributed campaign (one app per advertiser), else "" (unknown)."""
    if app_param:
        return app_param[:200]
    if advertiser_id is not None:
        return f"adv:{advertiser_id}"
    return ""
