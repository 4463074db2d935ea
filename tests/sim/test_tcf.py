from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import tcf

# A TC string produced by another implementation, with the values it decodes to.
KNOWN = "CPhBZtcPhBZtcACABAENCACgAIAAAAAAAAAAH2QAYH0AfYB9kAGB9YH2AAAA.YAAAAAAAAAAA"


def test_decodes_a_string_from_another_implementation() -> None:
    c = tcf.decode(KNOWN)
    assert (c.cmp_id, c.cmp_version, c.consent_screen) == (2, 1, 0)
    assert c.consent_language == "EN" and c.vendor_list_version == 128
    assert c.policy_version == 2 and c.is_service_specific and not c.use_non_standard_texts
    assert c.purposes_consent == {1} and c.purposes_li_transparency == frozenset()
    assert c.publisher_cc == "AA"
    assert c.vendor_consents == {1000, 1001, 1002, 1003, 1004}
    assert c.vendor_legitimate_interests == {1003, 1004}
    assert c.created_ds == c.last_updated_ds
    assert not c.allows(1000)  # purposes 2-4 are missing
    assert c.allows(1000, purposes=(1,))


def test_reencoding_gives_the_same_core_bits() -> None:
    c = tcf.decode(KNOWN)
    again = tcf.encode(c)
    assert tcf.decode(again) == c
    assert KNOWN.startswith(again.rstrip("A"))


def _consent(vendors: frozenset[int], purposes: frozenset[int]) -> tcf.TcfConsent:
    return tcf.TcfConsent(
        created_ds=16_000_000_000,
        last_updated_ds=16_000_000_123,
        cmp_id=300,
        cmp_version=7,
        consent_screen=1,
        consent_language="DE",
        vendor_list_version=180,
        purposes_consent=purposes,
        purposes_li_transparency=frozenset({2, 7}),
        special_feature_opt_ins=frozenset({1}),
        publisher_cc="DE",
        vendor_consents=vendors,
        vendor_legitimate_interests=frozenset(v for v in vendors if v % 2),
    )


@given(
    st.frozensets(st.integers(1, 3000), max_size=60),
    st.frozensets(st.integers(1, 24), max_size=24),
)
def test_round_trip(vendors: frozenset[int], purposes: frozenset[int]) -> None:
    consent = _consent(vendors, purposes)
    text = tcf.encode(consent)
    assert "=" not in text and "+" not in text and "/" not in text
    assert tcf.decode(text) == consent


def test_sparse_vendors_use_ranges_and_stay_short() -> None:
    sparse = tcf.encode(_consent(frozenset({5000, 5001, 5002}), frozenset({1, 2, 3, 4})))
    dense = tcf.encode(_consent(frozenset(range(1, 40)), frozenset({1, 2, 3, 4})))
    assert len(sparse) < 80  # a 5002-bit bitfield would need ~840 characters
    c = tcf.decode(sparse)
    assert c.vendor_consents == {5000, 5001, 5002} and c.allows(5001)
    assert tcf.decode(dense).vendor_consents == frozenset(range(1, 40))


@pytest.mark.parametrize("bad", ["", "!!!", "AAAA", "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"])
def test_rejects_what_is_not_a_v2_core_string(bad: str) -> None:
    with pytest.raises(tcf.TcfDecodeError):
        tcf.decode(bad)
