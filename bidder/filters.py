"""Traffic filters run before any campaign is looked at: each rejection has an OpenRTB no-bid
reason code (``nbr``) and a reason label for metrics.

The user agent and IP examined are the device's (``device.ua``, ``device.ip``/``ipv6``): the
HTTP request itself comes from the exchange's servers, so its headers say nothing of the user.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from bidder.openrtb import BidRequest, Nbr, Publisher, schain

DEFAULT_CRAWLER_PATTERNS: Final = (
    "bot/",
    "bot;",
    "bot)",
    "+http",
    "crawler",
    "spider",
    "headless",
    "slurp",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "scrapy",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "facebookexternalhit",
    "mediapartners-google",
    "lighthouse",
)


_UA_CACHE_SIZE: Final = 50_000


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # "crawler", "datacenter", "blocked_publisher", "schain"
    nbr: int


CRAWLER: Final = Rejection("crawler", Nbr.WEB_SPIDER)
DATACENTER: Final = Rejection("datacenter", Nbr.DATACENTER_IP)
BLOCKED_PUBLISHER: Final = Rejection("blocked_publisher", Nbr.BLOCKED_PUBLISHER)
INCOMPLETE_SCHAIN: Final = Rejection("schain", Nbr.INCOMPLETE_SCHAIN)


def normalize_domain(value: str) -> str:
    """``https://WWW.Example.com/path`` -> ``example.com``."""
    d = value.strip().lower()
    if "://" in d:
        d = d.split("://", 1)[1]
    d = d.split("/", 1)[0].split(":", 1)[0].rstrip(".")
    return d[4:] if d.startswith("www.") else d


def domain_and_parents(domain: str) -> list[str]:
    """``a.b.example.com`` -> [``a.b.example.com``, ``b.example.com``, ``example.com``]."""
    parts = domain.split(".")
    return [".".join(parts[i:]) for i in range(max(1, len(parts) - 1))]


class CidrSet:
    """Membership of IPv4/IPv6 addresses in a list of CIDR blocks: merged intervals + bisect."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for text in cidrs:
            net = ipaddress.ip_network(text.strip(), strict=False)
            span = (int(net.network_address), int(net.broadcast_address))
            (v4 if net.version == 4 else v6).append(span)
        self._v4 = self._merge(v4)
        self._v6 = self._merge(v6)

    @staticmethod
    def _merge(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in sorted(spans):
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        return starts, ends

    def __bool__(self) -> bool:
        return bool(self._v4[0] or self._v6[0])

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not address:
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        starts, ends = self._v4 if ip.version == 4 else self._v6
        value = int(ip)
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]


class TrafficFilter:
    """Crawlers, data-centre IPs, blocked publishers and (optionally) incomplete supply chains."""

    def __init__(
        self,
        crawler_patterns: Iterable[str] = DEFAULT_CRAWLER_PATTERNS,
        datacenter_cidrs: Iterable[str] = (),
        blocked_publishers: Iterable[str] = (),
        reject_incomplete_schain: bool = False,
    ) -> None:
        self._patterns = tuple(p.strip().lower() for p in crawler_patterns if p.strip())
        self._ua_seen: dict[str, bool] = {}  # user agents repeat: remember the verdicts
        self._datacenter = CidrSet(datacenter_cidrs)
        self._blocked = frozenset(b.strip().lower() for b in blocked_publishers if b.strip())
        self._blocked_domains = frozenset(normalize_domain(b) for b in self._blocked)
        self._schain = reject_incomplete_schain

    def check(self, req: BidRequest) -> Rejection | None:
        device = req.device
        if device is not None:
            if device.ua and self.is_crawler(device.ua):
                return CRAWLER
            if self._datacenter and (
                device.ip in self._datacenter or device.ipv6 in self._datacenter
            ):
                return DATACENTER
        if self._blocked and self._publisher_blocked(req):
            return BLOCKED_PUBLISHER
        if self._schain:
            chain = schain(req)
            if chain is not None and chain.complete != 1:
                return INCOMPLETE_SCHAIN
        return None

    def is_crawler(self, user_agent: str) -> bool:
        """A case-insensitive substring match of any pattern (verdicts cached per agent)."""
        seen = self._ua_seen.get(user_agent)
        if seen is None:
            ua = user_agent.lower()
            seen = any(p in ua for p in self._patterns)
            if len(self._ua_seen) >= _UA_CACHE_SIZE:
                self._ua_seen.clear()
            self._ua_seen[user_agent] = seen
        return seen

    def _publisher_blocked(self, req: BidRequest) -> bool:
        publisher: Publisher | None = None
        names: list[str] = []
        domains: list[str] = []
        if req.site is not None:
            publisher = req.site.publisher
            if req.site.domain:
                domains.append(req.site.domain)
        elif req.app is not None:
            publisher = req.app.publisher
            if req.app.bundle:
                names.append(req.app.bundle)
            if req.app.domain:
                domains.append(req.app.domain)
        elif req.dooh is not None:
            publisher = req.dooh.publisher
            if req.dooh.domain:
                domains.append(req.dooh.domain)
        if publisher is not None:
            if publisher.id:
                names.append(publisher.id)
            if publisher.domain:
                domains.append(publisher.domain)
        if any(n.strip().lower() in self._blocked for n in names):
            return True
        return any(
            d in self._blocked_domains
            for raw in domains
            for d in domain_and_parents(normalize_domain(raw))
        )
