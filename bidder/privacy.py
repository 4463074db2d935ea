"""What a request lets us do with the user: COPPA, GDPR (IAB TCF v2), US privacy, GPP.

The outcome is a :class:`Privacy`: whether we may personalise (user segments, user-level
features) and whether we may use a user key at all (frequency counters). Anything we cannot read
with certainty is treated as a refusal: the bid goes on contextually, never the other way round.

- COPPA (``regs.coppa=1``): contextual only.
- GDPR applies when ``regs.gdpr`` (or ``regs.ext.gdpr``) is 1, when GPP names the TCF EU
  section, or, when the flag is absent, when the user's country is in the EEA/UK/CH. Then the TCF
  v2 core segment decides: our vendor id needs consent; purpose 1 (store/access) allows the user
  key; purposes 1, 3 and 4 (profile, personalised ads) allow personalisation; a publisher
  restriction of type 0 on a purpose withdraws it for us. No consent string, an unreadable one,
  or our vendor missing: contextual only.
- ``us_privacy`` with the opt-out-of-sale flag set (``1YY-``): no personalisation (frequency
  capping is not a sale and stays).
- GPP (``regs.gpp``): the TCF EU (2) and US privacy (6) sections as above; US national (7) opt
  outs of sale, sharing or targeted advertising: no personalisation; other US state sections we
  do not decode: no personalisation.

TCF v2 core segment layout (bits): Version 6, Created 36, LastUpdated 36, CmpId 12,
CmpVersion 12, ConsentScreen 6, ConsentLanguage 12, VendorListVersion 12, TcfPolicyVersion 6,
IsServiceSpecific 1, UseNonStandardTexts 1, SpecialFeatureOptIns 12, PurposesConsent 24,
PurposesLITransparency 24, PurposeOneTreatment 1, PublisherCC 12, then the vendor consent section
(MaxVendorId 16, IsRangeEncoding 1, then a MaxVendorId-bit field or NumEntries 12 of
{IsARange 1, Start 16[, End 16]}), the vendor legitimate-interest section (same encoding) and the
publisher restrictions (NumPubRestrictions 12 of {PurposeId 6, RestrictionType 2, range entries}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bidder.openrtb import BidRequest, consent_string, gdpr_applies, gpp, us_privacy

# EU + EEA + UK + Switzerland, ISO-3166-1 alpha-3 as OpenRTB geo.country.
GDPR_COUNTRIES: Final = frozenset(
    {
        "AUT",
        "BEL",
        "BGR",
        "HRV",
        "CYP",
        "CZE",
        "DNK",
        "EST",
        "FIN",
        "FRA",
        "DEU",
        "GRC",
        "HUN",
        "IRL",
        "ITA",
        "LVA",
        "LTU",
        "LUX",
        "MLT",
        "NLD",
        "POL",
        "PRT",
        "ROU",
        "SVK",
        "SVN",
        "ESP",
        "SWE",
        "ISL",
        "LIE",
        "NOR",
        "GBR",
        "CHE",
    }
)
TCF_EU_SECTION: Final = 2
USP_SECTION: Final = 6
US_NATIONAL_SECTION: Final = 7


@dataclass(frozen=True, slots=True)
class Privacy:
    personalize: bool  # user segments and user-level features
    user_key: bool  # a user key for frequency counters
    reason: str = ""  # why something is withheld: "coppa", "gdpr_no_consent", ...


ALLOW_ALL: Final = Privacy(True, True)


class VendorSet:
    """Vendor ids of one TCF section, kept in its own encoding (a bitfield or ranges)."""

    __slots__ = ("_bits", "_max", "_ranges")

    def __init__(self, max_id: int, bits: int = 0, ranges: tuple[tuple[int, int], ...] = ()):
        self._max = max_id
        self._bits = bits
        self._ranges = ranges

    def __contains__(self, vendor: object) -> bool:
        if not isinstance(vendor, int) or vendor < 1 or vendor > self._max:
            return False
        if self._ranges:
            return any(lo <= vendor <= hi for lo, hi in self._ranges)
        return bool((self._bits >> (self._max - vendor)) & 1)


@dataclass(frozen=True, slots=True)
class TCString:
    version: int
    created_ds: int  # deciseconds since the epoch
    last_updated_ds: int
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    special_features: frozenset[int]
    purposes_consent: frozenset[int]
    purposes_li: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: VendorSet
    vendor_li: VendorSet
    # (purpose, restriction type, vendor set) from the publisher restrictions section
    restrictions: tuple[tuple[int, int, VendorSet], ...]

    def purpose_allowed(self, purpose: int, vendor: int) -> bool:
        """Consent to ``purpose`` that no publisher restriction of type 0 withdraws for us."""
        if purpose not in self.purposes_consent:
            return False
        return not any(p == purpose and t == 0 and vendor in v for p, t, v in self.restrictions)


_B64URL: Final = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}


class _Bits:
    """Big-endian bit reader over base64url characters (6 bits each, whatever the length:
    TCF and GPP segments are not always whole bytes); reading past the end raises ValueError."""

    __slots__ = ("_n", "_pos", "_value")

    def __init__(self, segment: str) -> None:
        if len(segment) > 8192:
            raise ValueError("consent string too long")
        value = 0
        try:
            for ch in segment:
                value = (value << 6) | _B64URL[ch]
        except KeyError:
            raise ValueError("consent string is not base64url") from None
        self._value = value
        self._n = len(segment) * 6
        self._pos = 0

    def read(self, width: int) -> int:
        if self._pos + width > self._n:
            raise ValueError("consent string is truncated")
        self._pos += width
        return (self._value >> (self._n - self._pos)) & ((1 << width) - 1)

    def flags(self, width: int) -> frozenset[int]:
        value = self.read(width)
        return frozenset(i + 1 for i in range(width) if (value >> (width - 1 - i)) & 1)

    def letters(self, count: int) -> str:
        return "".join(chr(ord("A") + self.read(6)) for _ in range(count))

    def fibonacci(self) -> int:
        """A Fibonacci-coded integer (GPP): bits weigh 1, 2, 3, 5, ...; '11' ends it."""
        value, a, b, last = 0, 1, 2, 0
        for _ in range(64):
            bit = self.read(1)
            if bit and last:
                return value
            if bit:
                value += a
            a, b, last = b, a + b, bit
        raise ValueError("Fibonacci integer too long")


def _vendor_section(bits: _Bits) -> VendorSet:
    max_id = bits.read(16)
    if bits.read(1):
        return VendorSet(max_id, ranges=_range_entries(bits, max_id))
    return VendorSet(max_id, bits=bits.read(max_id) if max_id else 0)


def _range_entries(bits: _Bits, max_id: int) -> tuple[tuple[int, int], ...]:
    entries = []
    for _ in range(bits.read(12)):
        is_range = bits.read(1)
        start = bits.read(16)
        end = bits.read(16) if is_range else start
        if start < 1 or end < start or (max_id and end > max_id):
            raise ValueError("bad vendor range")
        entries.append((start, end))
    return tuple(entries)


def decode_tcf(consent: str) -> TCString:
    """The core segment of a TCF v2 string; raises ValueError when it cannot be read."""
    bits = _Bits(consent.strip().split(".", 1)[0])
    version = bits.read(6)
    if version != 2:
        raise ValueError(f"TCF version {version} is not supported")
    created = bits.read(36)
    updated = bits.read(36)
    cmp_id = bits.read(12)
    cmp_version = bits.read(12)
    screen = bits.read(6)
    language = bits.letters(2)
    vendor_list_version = bits.read(12)
    policy = bits.read(6)
    service_specific = bool(bits.read(1))
    bits.read(1)  # UseNonStandardTexts
    special = bits.flags(12)
    purposes = bits.flags(24)
    purposes_li = bits.flags(24)
    one_treatment = bool(bits.read(1))
    publisher_cc = bits.letters(2)
    consents = _vendor_section(bits)
    li = _vendor_section(bits)
    restrictions = []
    for _ in range(bits.read(12)):
        purpose = bits.read(6)
        kind = bits.read(2)
        ranges = _range_entries(bits, 0)
        top = max((hi for _, hi in ranges), default=0)
        restrictions.append((purpose, kind, VendorSet(top, ranges=ranges)))
    return TCString(
        version=version,
        created_ds=created,
        last_updated_ds=updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=screen,
        consent_language=language,
        vendor_list_version=vendor_list_version,
        policy_version=policy,
        is_service_specific=service_specific,
        special_features=special,
        purposes_consent=purposes,
        purposes_li=purposes_li,
        purpose_one_treatment=one_treatment,
        publisher_cc=publisher_cc,
        vendor_consents=consents,
        vendor_li=li,
        restrictions=tuple(restrictions),
    )


def decode_gpp(value: str) -> dict[int, str]:
    """Section id -> section string of a GPP string; raises ValueError when unreadable."""
    parts = value.strip().split("~")
    header = _Bits(parts[0])
    if header.read(6) != 3:
        raise ValueError("not a GPP header")
    header.read(6)  # version
    ids: list[int] = []
    last = 0
    for _ in range(header.read(12)):
        if header.read(1):
            start = last + header.fibonacci()
            end = start + header.fibonacci()
            if end - start > 64:
                raise ValueError("GPP section range too long")
            ids.extend(range(start, end + 1))
            last = end
        else:
            last += header.fibonacci()
            ids.append(last)
    if len(ids) != len(parts) - 1:
        raise ValueError("GPP sections do not match the header")
    return dict(zip(ids, parts[1:], strict=True))


def usp_opted_out(value: str | None) -> bool:
    """CCPA string ``1YYN``: version 1, notice, opt-out of sale, LSPA."""
    return value is not None and len(value) == 4 and value[0] == "1" and value[2] in "Yy"


def usnat_opted_out(section: str) -> bool:
    """US national core segment: sale (bits 18-19), sharing (20-21), targeted ads (22-23);
    1 means opted out. Unreadable counts as opted out."""
    try:
        bits = _Bits(section.split(".", 1)[0])
        bits.read(18)
        return any(bits.read(2) == 1 for _ in range(3))
    except ValueError:
        return True


class ConsentCache:
    """Decoded TCF strings by string (they repeat a lot); cleared when it reaches ``size``."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: dict[str, TCString | None] = {}

    def get(self, consent: str) -> TCString | None:
        try:
            return self._items[consent]
        except KeyError:
            pass
        try:
            tc: TCString | None = decode_tcf(consent)
        except ValueError:
            tc = None
        if len(self._items) >= self._size:
            self._items.clear()
        self._items[consent] = tc
        return tc


def decide(req: BidRequest, vendor_id: int, cache: ConsentCache) -> Privacy:
    """The privacy decision for one request (pure apart from the memo in ``cache``)."""
    regs = req.regs
    if regs is not None and regs.coppa == 1:
        return Privacy(False, False, "coppa")
    gpp_string, gpp_sids = gpp(req)
    sections: dict[int, str] = {}
    if gpp_string:
        try:
            sections = decode_gpp(gpp_string)
        except ValueError:
            return Privacy(False, False, "gpp_unreadable")
    applies = gdpr_applies(req)
    if applies is None:
        applies = 1 if TCF_EU_SECTION in gpp_sids or _country(req) in GDPR_COUNTRIES else 0
    result = ALLOW_ALL
    if applies == 1:
        consent = consent_string(req) or sections.get(TCF_EU_SECTION)
        result = _gdpr(consent, vendor_id, cache)
        if not result.personalize:  # the US signals below only withdraw personalisation
            return result
    if usp_opted_out(us_privacy(req)) or usp_opted_out(sections.get(USP_SECTION)):
        return Privacy(False, result.user_key, "us_privacy_optout")
    us = [sid for sid in sections if sid >= US_NATIONAL_SECTION]
    if US_NATIONAL_SECTION in sections and usnat_opted_out(sections[US_NATIONAL_SECTION]):
        return Privacy(False, result.user_key, "gpp_optout")
    if any(sid != US_NATIONAL_SECTION for sid in us):
        return Privacy(False, result.user_key, "gpp_state")
    return result


def _gdpr(consent: str | None, vendor_id: int, cache: ConsentCache) -> Privacy:
    if not consent:
        return Privacy(False, False, "gdpr_no_consent")
    tc = cache.get(consent)
    if tc is None:
        return Privacy(False, False, "gdpr_bad_consent")
    if vendor_id <= 0 or vendor_id not in tc.vendor_consents:
        return Privacy(False, False, "gdpr_vendor")
    store = tc.purpose_allowed(1, vendor_id)
    personal = store and all(tc.purpose_allowed(p, vendor_id) for p in (3, 4))
    if store and personal:
        return ALLOW_ALL
    return Privacy(personal, store, "gdpr_purposes")


def _country(req: BidRequest) -> str:
    device, user = req.device, req.user
    if device is not None and device.geo is not None and device.geo.country:
        return device.geo.country.upper()
    if user is not None and user.geo is not None and user.geo.country:
        return user.geo.country.upper()
    return ""
