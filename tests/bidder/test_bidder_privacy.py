from __future__ import annotations

from typing import Any

import msgspec
import pytest
from tcf_encoder import encode_gpp, encode_tcf, encode_usnat

from bidder.openrtb import BidRequest
from bidder.privacy import (
    ALLOW_ALL,
    ConsentCache,
    Privacy,
    decide,
    decode_gpp,
    decode_tcf,
    usnat_opted_out,
    usp_opted_out,
)

US = 42


def test_tcf_core_fields_and_bitfield_vendors() -> None:
    s = encode_tcf(
        vendors=[1, 42, 755],
        purposes=[1, 3, 4, 10],
        purposes_li=[2, 7],
        vendors_li=[42],
        special_features=[1],
        cmp_id=300,
        cmp_version=5,
        vendor_list_version=240,
        created_ds=16_500_000_000,
        language="FR",
        publisher_cc="IT",
    )
    tc = decode_tcf(s)
    assert (tc.version, tc.cmp_id, tc.cmp_version, tc.vendor_list_version) == (2, 300, 5, 240)
    assert tc.created_ds == 16_500_000_000 and tc.last_updated_ds == 16_500_000_000
    assert tc.consent_language == "FR" and tc.publisher_cc == "IT"
    assert tc.purposes_consent == {1, 3, 4, 10}
    assert tc.purposes_li == {2, 7}
    assert tc.special_features == {1}
    assert [v for v in range(0, 800) if v in tc.vendor_consents] == [1, 42, 755]
    assert 42 in tc.vendor_li and 1 not in tc.vendor_li


def test_tcf_range_encoded_vendors_and_extra_segments() -> None:
    vendors = [*range(10, 20), 42, 500, *range(900, 905)]
    tc = decode_tcf(
        encode_tcf(vendors=vendors, purposes=[1], range_encoding=True, segments=["IAAA"])
    )
    assert [v for v in range(1, 1000) if v in tc.vendor_consents] == vendors


def test_publisher_restriction_withdraws_a_purpose_for_us_only() -> None:
    tc = decode_tcf(
        encode_tcf(vendors=[7, US], purposes=[1, 2, 3, 4], restrictions=[(3, 0, [US, 50])])
    )
    assert not tc.purpose_allowed(3, US)
    assert tc.purpose_allowed(3, 7)
    assert tc.purpose_allowed(4, US)
    cache = ConsentCache()
    consent = encode_tcf(vendors=[US], purposes=[1, 2, 3, 4], restrictions=[(4, 0, [US])])
    assert decide(_req(regs={"gdpr": 1}, user={"consent": consent}), US, cache) == Privacy(
        False, True, "gdpr_purposes"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "C",
        "not base64!",
        encode_tcf(vendors=[1], purposes=[1])[:20],  # truncated in the vendor section
        encode_tcf(vendors=[1], version=1),
    ],
)
def test_unreadable_tcf_strings_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        decode_tcf(text)


def test_gpp_header_reference_vectors() -> None:
    # Header vectors from the IAB GPP specification's examples.
    assert decode_gpp("DBABM~aaa") == {2: "aaa"}
    assert decode_gpp("DBACNY~aaa~bbb") == {2: "aaa", 6: "bbb"}
    assert decode_gpp("DBABjw~aaa~bbb") == {5: "aaa", 6: "bbb"}
    with pytest.raises(ValueError):
        decode_gpp("DBACNY~only-one-section")
    assert encode_gpp({2: "x"}) == "DBABM~x"
    assert encode_gpp({2: "x", 6: "y"}) == "DBACNY~x~y"


def test_us_privacy_and_us_national_opt_outs() -> None:
    assert usp_opted_out("1YY-") and usp_opted_out("1NYN") and usp_opted_out("1yy-")
    assert not usp_opted_out("1YN-") and not usp_opted_out("1---") and not usp_opted_out(None)
    assert not usp_opted_out("bogus")
    assert not usnat_opted_out(encode_usnat())
    assert usnat_opted_out(encode_usnat(sale=1))
    assert usnat_opted_out(encode_usnat(sharing=1))
    assert usnat_opted_out(encode_usnat(targeted=1))
    assert usnat_opted_out("@@")  # unreadable counts as an opt-out


def _req(**fields: Any) -> BidRequest:
    doc: dict[str, Any] = {"id": "r", "imp": [{"id": "1"}]}
    doc.update(fields)
    return msgspec.convert(doc, BidRequest)


FULL = encode_tcf(vendors=[US], purposes=[1, 2, 3, 4])
STORE_ONLY = encode_tcf(vendors=[US], purposes=[1, 2])
NO_STORE = encode_tcf(vendors=[US], purposes=[2, 3, 4])
OTHERS = encode_tcf(vendors=[7, 8], purposes=[1, 2, 3, 4])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ALLOW_ALL),
        ({"regs": {"coppa": 1}}, Privacy(False, False, "coppa")),
        (
            {"regs": {"coppa": 1, "gdpr": 1}, "user": {"consent": FULL}},
            Privacy(False, False, "coppa"),
        ),
        ({"regs": {"gdpr": 1}}, Privacy(False, False, "gdpr_no_consent")),
        ({"regs": {"gdpr": 1}, "user": {"consent": FULL}}, ALLOW_ALL),
        ({"regs": {"ext": {"gdpr": 1}}, "user": {"ext": {"consent": FULL}}}, ALLOW_ALL),
        ({"regs": {"gdpr": 1}, "user": {"consent": OTHERS}}, Privacy(False, False, "gdpr_vendor")),
        (
            {"regs": {"gdpr": 1}, "user": {"consent": STORE_ONLY}},
            Privacy(False, True, "gdpr_purposes"),
        ),
        (
            {"regs": {"gdpr": 1}, "user": {"consent": NO_STORE}},
            Privacy(False, False, "gdpr_purposes"),
        ),
        (
            {"regs": {"gdpr": 1}, "user": {"consent": "%%%"}},
            Privacy(False, False, "gdpr_bad_consent"),
        ),
        ({"regs": {"gdpr": 0}, "device": {"geo": {"country": "FRA"}}}, ALLOW_ALL),
        ({"device": {"geo": {"country": "FRA"}}}, Privacy(False, False, "gdpr_no_consent")),
        ({"user": {"geo": {"country": "gbr"}, "consent": FULL}}, ALLOW_ALL),
        ({"regs": {"us_privacy": "1YY-"}}, Privacy(False, True, "us_privacy_optout")),
        ({"regs": {"ext": {"us_privacy": "1YY-"}}}, Privacy(False, True, "us_privacy_optout")),
        (
            {"regs": {"gdpr": 1, "us_privacy": "1YY-"}, "user": {"consent": STORE_ONLY}},
            Privacy(False, True, "gdpr_purposes"),
        ),
        ({"regs": {"gpp": encode_gpp({2: FULL}), "gpp_sid": [2]}}, ALLOW_ALL),
        (
            {"regs": {"gpp": encode_gpp({2: OTHERS}), "gpp_sid": [2]}},
            Privacy(False, False, "gdpr_vendor"),
        ),
        (
            {"regs": {"gpp": encode_gpp({6: "1YY-"}), "gpp_sid": [6]}},
            Privacy(False, True, "us_privacy_optout"),
        ),
        ({"regs": {"gpp": encode_gpp({7: encode_usnat()}), "gpp_sid": [7]}}, ALLOW_ALL),
        (
            {"regs": {"gpp": encode_gpp({7: encode_usnat(sale=1)}), "gpp_sid": [7]}},
            Privacy(False, True, "gpp_optout"),
        ),
        (
            {"regs": {"gpp": encode_gpp({8: "BAAAAAAAAA"}), "gpp_sid": [8]}},
            Privacy(False, True, "gpp_state"),
        ),
        ({"regs": {"gpp": "garbage!!", "gpp_sid": [2]}}, Privacy(False, False, "gpp_unreadable")),
    ],
)
def test_privacy_decisions(fields: dict[str, Any], expected: Privacy) -> None:
    assert decide(_req(**fields), US, ConsentCache()) == expected


def test_without_a_vendor_id_gdpr_traffic_is_contextual() -> None:
    assert decide(_req(regs={"gdpr": 1}, user={"consent": FULL}), 0, ConsentCache()).reason == (
        "gdpr_vendor"
    )


def test_consent_cache_is_bounded_and_remembers_failures() -> None:
    cache = ConsentCache(size=2)
    assert cache.get(FULL) is not None
    assert cache.get("%%%") is None
    assert cache.get(FULL) is not None  # (cleared when full, then decoded again)
    assert len(cache._items) <= 2
