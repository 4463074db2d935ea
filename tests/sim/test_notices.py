from __future__ import annotations

import json
import random
from urllib.parse import parse_qs, urlsplit

from sim.notices import FollowupParams, draw_followups, extract_trackers, origin_of, postback_url

IMP = "http://127.0.0.1:8090/imp?ev=imp&txid=r1%3A1%3Ab0&sig=abc&price=1.5"
CLICK = "http://127.0.0.1:8090/click?ev=click&txid=r1%3A1%3Ab0&sig=def"


def test_banner_html() -> None:
    adm = (
        f'<a href="{CLICK.replace("&", "&amp;")}"><img src="https://cdn.shoply.example/c/1.png" '
        f'width="300" height="250" alt="x"></a><img src="{IMP}" width="1" height="1" '
        'style="display:none">'
    )
    t = extract_trackers(adm)
    assert t.impressions == (IMP,)  # the creative image is not a pixel
    assert t.clicks == (CLICK,)  # &amp; unescaped


def test_vast() -> None:
    adm = (
        '<VAST version="4.0"><Ad id="1"><InLine><Impression><![CDATA['
        f"{IMP}]]></Impression><Creatives><Creative><Linear><VideoClicks><ClickThrough>"
        f"<![CDATA[{CLICK}]]></ClickThrough></VideoClicks></Linear></Creative></Creatives>"
        "</InLine></Ad></VAST>"
    )
    t = extract_trackers(adm)
    assert t.impressions == (IMP,) and t.clicks == (CLICK,)


def test_native() -> None:
    adm = json.dumps(
        {
            "native": {
                "ver": "1.2",
                "assets": [],
                "link": {"url": CLICK, "clicktrackers": ["http://x/ct"]},
                "imptrackers": [IMP],
                "eventtrackers": [
                    {"event": 1, "method": 1, "url": "http://x/et"},
                    {"event": 2, "method": 1, "url": "http://x/viewable"},
                ],
            }
        }
    )
    t = extract_trackers(adm)
    assert t.impressions == (IMP, "http://x/et")
    assert t.clicks == (CLICK, "http://x/ct")
    assert extract_trackers("{not json").impressions == ()
    assert extract_trackers("") == extract_trackers("   ")


def test_followups_follow_the_truth() -> None:
    rng = random.Random(1)
    params = FollowupParams()
    fates = [draw_followups(rng, 0.05, 0.2, params) for _ in range(40_000)]
    rendered = [f for f in fates if f.render_s is not None]
    clicked = [f for f in rendered if f.click_s is not None]
    installed = [f for f in clicked if f.install_s is not None]
    assert abs(len(rendered) / len(fates) - params.render_share) < 0.01
    assert abs(len(clicked) / len(rendered) - 0.05) < 0.006
    assert abs(len(installed) / len(clicked) - 0.2) < 0.05
    assert all(f.click_s is None and f.install_s is None for f in fates if f.render_s is None)
    delays = sorted(f.install_s for f in installed if f.install_s is not None)
    assert 500 < delays[len(delays) // 2] < 4500  # median ~25 simulated minutes
    assert any(e.name == "purchase" and e.revenue_micros > 0 for f in installed for e in f.events)
    assert all(draw_followups(rng, 0.0, 1.0, params).click_s is None for _ in range(1000))


def test_postback_echoes_the_partner_link() -> None:
    url = postback_url(
        "http://127.0.0.1:8090/",
        event="install",
        click_url=CLICK,
        redirect="https://mmp.example/t?click_id=c-42&txid=r1%3A1%3Ab0",
        ifa="ifa-1",
        event_ts=12.5,
    )
    parts = urlsplit(url)
    assert origin_of(url) == "http://127.0.0.1:8090" and parts.path == "/postback"
    q = parse_qs(parts.query)
    assert q["click_id"] == ["c-42"] and q["txid"] == ["r1:1:b0"]
    assert q["event"] == ["install"] and q["partner"] == ["simmmp"] and q["ifa"] == ["ifa-1"]
    without = parse_qs(
        urlsplit(
            postback_url(
                "http://t",
                event="purchase",
                click_url=CLICK,
                redirect="",
                ifa="",
                event_ts=1.0,
                revenue_micros=4_990_000,
            )
        ).query
    )
    assert without["txid"] == ["r1:1:b0"] and without["revenue_micros"] == ["4990000"]
    assert "ifa" not in without
