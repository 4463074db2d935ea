"""IAB TCF v2 consent strings: a minimal, correct encoder of the core segment, and its decoder.

The core segment is a big-endian bit string, base64url-encoded without padding:

    Version 6 | Created 36 | LastUpdated 36 (deciseconds since the epoch) | CmpId 12 |
    CmpVersion 12 | ConsentScreen 6 | ConsentLanguage 12 (two letters, 6 bits each, A=0) |
    VendorListVersion 12 | TcfPolicyVersion 6 | IsServiceSpecific 1 | UseNonStandardTexts 1 |
    SpecialFeatureOptIns 12 | PurposesConsent 24 | PurposesLITransparency 24 |
    PurposeOneTreatment 1 | PublisherCC 12 |
    vendor consents: MaxVendorId 16 | IsRangeEncoding 1 | bitfield or ranges |
    vendor legitimate interests: the same |
    NumPubRestrictions 12 | restrictions

The encoder writes each vendor section in the shorter of the two encodings (bitfield or ranges)
and no publisher restrictions; the decoder reads both, and ignores segments after a ".".
"""

from __future__ import annotations

import base64
import dataclasses

from sim.errors import SimError

CORE_VERSION = 2


class TcfDecodeError(SimError, ValueError):
    """Not a TCF v2 core string (bad input)."""


@dataclasses.dataclass(frozen=True)
class TcfConsent:
    created_ds: int  # deciseconds since the epoch
    last_updated_ds: int
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str  # two letters, "EN"
    vendor_list_version: int
    policy_version: int = 4  # TCF 2.2
    is_service_specific: bool = True
    use_non_standard_texts: bool = False
    special_feature_opt_ins: frozenset[int] = frozenset()  # 1..12
    purposes_consent: frozenset[int] = frozenset()  # 1..24
    purposes_li_transparency: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_cc: str = "AA"
    vendor_consents: frozenset[int] = frozenset()  # vendor ids 1..65535
    vendor_legitimate_interests: frozenset[int] = frozenset()

    def allows(self, vendor_id: int, purposes: tuple[int, ...] = (1, 2, 3, 4)) -> bool:
        """The vendor has consent and every purpose in ``purposes`` has consent."""
        return vendor_id in self.vendor_consents and all(
            p in self.purposes_consent for p in purposes
        )


class _BitWriter:
    def __init__(self) -> None:
        self._value = 0
        self._length = 0

    def write(self, value: int, width: int) -> None:
        if value < 0 or value >= 1 << width:
            raise ValueError(f"{value} does not fit in {width} bits")
        self._value = (self._value << width) | value
        self._length += width

    def flag(self, value: bool) -> None:
        self.write(1 if value else 0, 1)

    def bitset(self, members: frozenset[int], width: int) -> None:
        """Bit i-1 (from the left) is set when i is a member: ids are 1-based."""
        value = 0
        for member in members:
            if not 1 <= member <= width:
                raise ValueError(f"{member} is outside 1..{width}")
            value |= 1 << (width - member)
        self.write(value, width)

    def letters(self, text: str) -> None:
        if len(text) != 2 or not text.isascii() or not text.isalpha():
            raise ValueError(f"{text!r} is not two letters")
        for ch in text.upper():
            self.write(ord(ch) - ord("A"), 6)

    def to_base64url(self) -> str:
        pad = (-self._length) % 8
        total = self._length + pad
        raw = (self._value << pad).to_bytes(total // 8, "big")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._length = len(data) * 8
        self._pos = 0

    def read(self, width: int) -> int:
        if self._pos + width > self._length:
            raise TcfDecodeError("TCF string ends early")
        shift = self._length - self._pos - width
        self._pos += width
        return (self._value >> shift) & ((1 << width) - 1)

    def flag(self) -> bool:
        return self.read(1) == 1

    def bitset(self, width: int) -> frozenset[int]:
        value = self.read(width)
        return frozenset(i for i in range(1, width + 1) if value >> (width - i) & 1)

    def letters(self) -> str:
        return "".join(chr(self.read(6) + ord("A")) for _ in range(2))


def _ranges(vendors: frozenset[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for vendor in sorted(vendors):
        if ranges and ranges[-1][1] == vendor - 1:
            ranges[-1] = (ranges[-1][0], vendor)
        else:
            ranges.append((vendor, vendor))
    return ranges


def _write_vendor_section(writer: _BitWriter, vendors: frozenset[int]) -> None:
    """Bitfield or range encoding, whichever is shorter (as CMPs do)."""
    max_id = max(vendors, default=0)
    writer.write(max_id, 16)
    ranges = _ranges(vendors)
    range_bits = 12 + sum(17 if start == end else 33 for start, end in ranges)
    if range_bits >= max_id:
        writer.flag(False)
        if max_id:
            writer.bitset(vendors, max_id)
        return
    writer.flag(True)
    writer.write(len(ranges), 12)
    for start, end in ranges:
        writer.flag(start != end)
        writer.write(start, 16)
        if start != end:
            writer.write(end, 16)


def _read_vendor_section(reader: _BitReader) -> frozenset[int]:
    max_id = reader.read(16)
    if not reader.flag():
        return reader.bitset(max_id) if max_id else frozenset()
    vendors: set[int] = set()
    for _ in range(reader.read(12)):
        is_range = reader.flag()
        start = reader.read(16)
        end = reader.read(16) if is_range else start
        if end < start or end > max_id:
            raise TcfDecodeError(f"bad vendor range {start}-{end} (max {max_id})")
        vendors.update(range(start, end + 1))
    return frozenset(vendors)


def encode(consent: TcfConsent) -> str:
    """The core segment of ``consent`` as a TC string."""
    w = _BitWriter()
    w.write(CORE_VERSION, 6)
    w.write(consent.created_ds, 36)
    w.write(consent.last_updated_ds, 36)
    w.write(consent.cmp_id, 12)
    w.write(consent.cmp_version, 12)
    w.write(consent.consent_screen, 6)
    w.letters(consent.consent_language)
    w.write(consent.vendor_list_version, 12)
    w.write(consent.policy_version, 6)
    w.flag(consent.is_service_specific)
    w.flag(consent.use_non_standard_texts)
    w.bitset(consent.special_feature_opt_ins, 12)
    w.bitset(consent.purposes_consent, 24)
    w.bitset(consent.purposes_li_transparency, 24)
    w.flag(consent.purpose_one_treatment)
    w.letters(consent.publisher_cc)
    _write_vendor_section(w, consent.vendor_consents)
    _write_vendor_section(w, consent.vendor_legitimate_interests)
    w.write(0, 12)  # no publisher restrictions
    return w.to_base64url()


def decode(text: str) -> TcfConsent:
    """Decode the core segment of a TC string; raises TcfDecodeError on anything else."""
    core = text.split(".", 1)[0].strip()
    if not core:
        raise TcfDecodeError("empty TCF string")
    try:
        data = base64.urlsafe_b64decode(core + "=" * (-len(core) % 4))
    except (ValueError, TypeError) as exc:
        raise TcfDecodeError(f"not base64url: {exc}") from None
    r = _BitReader(data)
    version = r.read(6)
    if version != CORE_VERSION:
        raise TcfDecodeError(f"version {version} is not TCF v2")
    consent = TcfConsent(
        created_ds=r.read(36),
        last_updated_ds=r.read(36),
        cmp_id=r.read(12),
        cmp_version=r.read(12),
        consent_screen=r.read(6),
        consent_language=r.letters(),
        vendor_list_version=r.read(12),
        policy_version=r.read(6),
        is_service_specific=r.flag(),
        use_non_standard_texts=r.flag(),
        special_feature_opt_ins=r.bitset(12),
        purposes_consent=r.bitset(24),
        purposes_li_transparency=r.bitset(24),
        purpose_one_treatment=r.flag(),
        publisher_cc=r.letters(),
        vendor_consents=_read_vendor_section(r),
        vendor_legitimate_interests=_read_vendor_section(r),
    )
    return consent
