from __future__ import annotations

import pytest

from bidder.filters import CidrSet, TrafficFilter, domain_and_parents, normalize_domain


def test_cidr_set_ipv4_ipv6_and_mapped_addresses() -> None:
    s = CidrSet(["10.0.0.0/8", "10.1.0.0/16", "192.168.1.0/24", "192.168.2.0/24", "2001:db8::/32"])
    inside = [
        "10.0.0.0",
        "10.255.255.255",
        "192.168.1.7",
        "192.168.2.255",
        "2001:db8::1",
        "::ffff:10.2.3.4",
    ]
    outside = ["11.0.0.0", "9.255.255.255", "192.168.3.0", "2001:db9::1", "", "not an ip", "::1"]
    assert all(ip in s for ip in inside)
    assert not any(ip in s for ip in outside)
    assert None not in s
    assert not CidrSet([])
    assert CidrSet(["1.2.3.4"])  # a bare address is a /32
    assert "1.2.3.4" in CidrSet(["1.2.3.4"]) and "1.2.3.5" not in CidrSet(["1.2.3.4"])


def test_bad_cidr_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        CidrSet(["10.0.0.0/33"])


@pytest.mark.parametrize(
    ("ua", "crawler"),
    [
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
        ("Mozilla/5.0 (compatible; AhrefsBot/7.0)", True),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0", True),
        ("python-requests/2.31", True),
        ("curl/8.4.0", True),
        ("Mozilla/5.0 (Linux; Android 10; CUBOT X19) AppleWebKit/537.36 Chrome/119 Mobile", False),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile",
            False,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36",
            False,
        ),
    ],
)
def test_crawler_user_agents(ua: str, crawler: bool) -> None:
    f = TrafficFilter()
    assert f.is_crawler(ua) is crawler
    assert f.is_crawler(ua) is crawler  # the cached verdict agrees


def test_custom_patterns_replace_the_defaults() -> None:
    f = TrafficFilter(crawler_patterns=("MyScanner",))
    assert f.is_crawler("mozilla myscanner/1.0")
    assert not f.is_crawler("Googlebot/2.1")
    assert not TrafficFilter(crawler_patterns=()).is_crawler("Googlebot/2.1")


def test_domains() -> None:
    assert normalize_domain(" HTTPS://WWW.Example.COM:443/path?q=1 ") == "example.com"
    assert normalize_domain("news.example.com.") == "news.example.com"
    assert domain_and_parents("a.b.example.com") == [
        "a.b.example.com",
        "b.example.com",
        "example.com",
    ]
    assert domain_and_parents("localhost") == ["localhost"]
