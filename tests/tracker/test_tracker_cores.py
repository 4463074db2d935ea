"""The tracker's pure cores: notice verification, the price macro, attribution, cost per
activation, spend conversion, click-through URLs, the Kinesis batching rule and the spool."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet import clickthrough, signing
from tracker import attribution as attr
from tracker import cpa
from tracker.errors import Refused
from tracker.kinesis import MAX_CALL_BYTES, SpooledRecord, chunk
from tracker.notice import parse_price, parse_query, verify
from tracker.spend import campaign_cost, spend_day, win_markup
from tracker.spool import Spool
from tracker.store import spend_lanes

KEY = b"0123456789abcdef0123456789abcdef"
OLD = b"the previous key, still in flight"
NOW = 1_800_000_000.0


def bid_params(**over: str) -> dict[str, str]:
    params = {
        "txid": "req:1:bidder-0",
        "cid": "12",
        "crid": "58",
        "bid": "2400000",
        "cur": "USD",
        "ts": str(int(NOW)),
        "exp": str(int(NOW) + 3600),
    }
    params.update(over)
    return params


def url_params(
    kind: str, key: bytes = KEY, price: str | None = "1.5", **over: str
) -> dict[str, str]:
    url = signing.notice_url("http://t", kind, bid_params(**over), key)
    if price is not None:
        url = url.replace("${AUCTION_PRICE}", price)
    return parse_query(urlsplit(url).query)


KEYS = signing.KeySet(KEY, (OLD,))


def refused(kind: str, params: dict[str, str], now: float = NOW) -> str:
    with pytest.raises(Refused) as info:
        verify(kind, params, KEYS, now)
    return info.value.cause


def test_a_notice_of_the_current_key_verifies_with_its_price() -> None:
    n = verify("bill", url_params("bill"), KEYS, NOW)
    assert (n.txid, n.campaign_id, n.creative_id, n.bid_micros) == (
        "req:1:bidder-0",
        12,
        58,
        2_400_000,
    )
    assert (n.price_micros, n.price_state, n.key_index) == (1_500_000, "given", 0)


def test_a_rotated_key_still_verifies_and_an_unknown_one_does_not() -> None:
    assert verify("win", url_params("win", OLD), KEYS, NOW).key_index == 1
    assert refused("win", url_params("win", b"a key nobody in the set knows")) == "altered"
    # after the previous key is retired, its URLs stop verifying
    with pytest.raises(Refused):
        verify("win", url_params("win", OLD), signing.KeySet(KEY), NOW)


def test_forged_altered_expired_and_wrong_path_urls_are_refused_by_cause() -> None:
    good = url_params("bill")
    assert refused("bill", {k: v for k, v in good.items() if k != "sig"}) == "forged"
    assert refused("bill", {**good, "sig": "zz" * 16}) == "forged"
    assert refused("bill", {k: v for k, v in good.items() if k != "cid"}) == "forged"
    assert refused("bill", {**good, "cid": "13"}) == "altered"
    assert refused("bill", {**good, "bid": "99000000"}) == "altered"
    assert refused("bill", good, now=NOW + 3600) == "expired"
    assert refused("click", url_params("imp")) == "wrong_path"


def test_parameters_a_partner_adds_are_outside_the_signature() -> None:
    params = {**url_params("click", price=None), "partner": "mmp", "ifa": "x", "clickid": "c1"}
    assert verify("click", params, KEYS, NOW).txid == "req:1:bidder-0"


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(Refused) as info:
        parse_query("a=1&a=2")
    assert info.value.cause == "malformed"


@pytest.mark.parametrize(
    ("raw", "micros"),
    [
        ("1.93", 1_930_000),
        ("0.5", 500_000),
        ("12", 12_000_000),
        ("0", 0),
        ("1.2300000", 1_230_000),
        ("3.000001", 3_000_001),
    ],
)
def test_prices_are_read_as_exact_micros(raw: str, micros: int) -> None:
    assert parse_price(raw) == (micros, "given")


@pytest.mark.parametrize("raw", ["", "  ", "${AUCTION_PRICE}", "${AUCTION_PRICE:B64}"])
def test_an_empty_or_unsubstituted_price_is_missing(raw: str) -> None:
    assert parse_price(raw) == (None, "missing")
    assert parse_price(None) == (None, "absent")


@pytest.mark.parametrize(
    "raw",
    [
        "-1",
        "1e3",
        "1,5",
        "0x10",
        "1.0000001",
        "nan",
        "inf",
        "01.5",
        "AAABBBCCC",
        "1.5USD",
        "99999999999",
    ],
)
def test_anything_else_is_not_a_price(raw: str) -> None:
    with pytest.raises(Refused) as info:
        parse_price(raw)
    assert info.value.cause == "price_invalid"


@given(st.integers(min_value=0, max_value=10**15))
def test_price_parsing_round_trips_every_micro_amount(micros: int) -> None:
    text = str(Decimal(micros) / 1_000_000)
    assert parse_price(text) == (micros, "given")


def test_a_price_above_the_bid_is_refused_on_win_and_bill_not_on_loss() -> None:
    assert refused("bill", url_params("bill", price="2.400001")) == "price_above_bid"
    assert refused("win", url_params("win", price="3")) == "price_above_bid"
    assert verify("bill", url_params("bill", price="2.4"), KEYS, NOW).price_micros == 2_400_000
    loss = {**url_params("loss", price="3"), "loss": "102"}
    n = verify("loss", loss, KEYS, NOW)
    assert (n.price_micros, n.loss_reason) == (3_000_000, 102)


def test_win_markup_rebuilds_verifiable_impression_and_click_urls() -> None:
    win = verify("win", url_params("win"), KEYS, NOW)
    markup = '<a href="${CLICK_URL}"><img src="${IMP_URL}"></a><!--${AUCTION_PRICE}-->'
    html = win_markup(markup, win.signed, KEYS.signer, "http://t", "1.5")
    click = html.split('href="')[1].split('"')[0]
    imp = html.split('src="')[1].split('"')[0]
    assert "<!--1.5-->" in html
    assert verify("click", parse_query(urlsplit(click).query), KEYS, NOW).txid == win.txid
    n = verify("imp", parse_query(urlsplit(imp).query), KEYS, NOW)
    assert n.price_micros == 1_500_000


def test_cost_is_the_thousandth_of_the_cpm_converted_and_rounded_down() -> None:
    assert campaign_cost(2_000_000, 1_000_000, 1_000_000) == 2_000
    assert campaign_cost(2_000_000, 1_000_000, 920_000) == 1_840  # USD bid, EUR campaign
    assert campaign_cost(1_999, 1_000_000, 1_000_000) == 1  # never rounded up
    assert campaign_cost(1_000_000, 150_000_000, 1_000_000) == 6  # JPY bid, USD campaign
    with pytest.raises(ValueError):
        campaign_cost(1, 0, 1)


def test_spend_counts_on_the_campaign_timezone_day() -> None:
    at = 1_800_000_000.0  # 2027-01-15 08:00 UTC
    assert str(spend_day(at, "UTC")) == "2027-01-15"
    assert str(spend_day(at, "America/Los_Angeles")) == "2027-01-15"
    assert str(spend_day(at - 9 * 3600, "America/Los_Angeles")) == "2027-01-14"
    assert str(spend_day(at + 16 * 3600 + 60, "Asia/Tokyo")) == "2027-01-16"


def test_a_process_takes_consecutive_spend_lanes_wrapping_at_the_fleets_count() -> None:
    assert spend_lanes(0, 4, 16) == (0, 1, 2, 3)
    assert spend_lanes(14, 4, 16) == (14, 15, 0, 1)
    assert spend_lanes(3, 16, 16) == (*range(3, 16), 0, 1, 2)
    for count, lanes in ((17, 16), (0, 16), (1, 40_000)):
        with pytest.raises(ValueError):
            spend_lanes(0, count, lanes)


def click(
    cid: str = "c1", at: float = NOW, window: int = 7 * 86400, campaign: int = 1
) -> attr.Click:
    return attr.Click(cid, f"tx-{cid}", campaign, 10, "u1", at, window)


def test_an_install_goes_to_its_click_id_first() -> None:
    d = attr.attribute_install(
        by_click_id=click("a", campaign=1), last_click=click("b", campaign=2), now=NOW + 100
    )
    assert (d.attributed, d.rule, d.campaign_id, d.click_id) == (True, "click_id", 1, "a")


def test_else_to_the_devices_last_click_within_the_window() -> None:
    d = attr.attribute_install(by_click_id=None, last_click=click("b", campaign=2), now=NOW + 100)
    assert (d.rule, d.campaign_id, d.txid) == ("last_click", 2, "tx-b")


def test_outside_the_window_or_without_a_click_it_is_organic() -> None:
    late = NOW + 7 * 86400
    assert (
        attr.attribute_install(by_click_id=click(), last_click=click(), now=late).rule == "organic"
    )
    short = click(window=3600)
    assert (
        attr.attribute_install(by_click_id=None, last_click=short, now=NOW + 3601).rule == "organic"
    )
    assert attr.attribute_install(by_click_id=None, last_click=short, now=NOW + 3599).attributed
    assert (
        attr.attribute_install(by_click_id=None, last_click=None, now=NOW)
        == attr.Attribution.organic()
    )


def test_an_in_app_event_follows_its_install_within_the_window() -> None:
    install = attr.Install("u1", "app", True, "a", "tx-a", 1, 10, NOW, 86400)
    d = attr.attribute_event(install=install, now=NOW + 3600)
    assert (d.attributed, d.campaign_id, d.click_id) == (True, 1, "a")
    assert not attr.attribute_event(install=install, now=NOW + 86400).attributed
    organic = attr.Install("u1", "app", False, "", "", 0, 0, NOW, 0)
    assert not attr.attribute_event(install=organic, now=NOW + 1).attributed
    assert not attr.attribute_event(install=None, now=NOW).attributed


def test_click_ids_are_stable_per_transaction_and_keyed() -> None:
    a = attr.click_id_for("tx1", KEY)
    assert a == attr.click_id_for("tx1", KEY) and a.startswith("c") and len(a) == 25
    assert a != attr.click_id_for("tx2", KEY) and a != attr.click_id_for("tx1", OLD)


def test_user_keys_hash_the_device_id_and_never_show_it() -> None:
    uk = signing.user_key("AAAA-bbbb", KEY)
    assert uk == signing.user_key(" aaaa-BBBB ", KEY) and "aaaa" not in uk
    assert uk != signing.user_key("AAAA-bbbb", OLD)


def standing(
    spend: int, n: int, target: int = 1_000_000, level: cpa.Level = "campaign", entity: int = 1
) -> cpa.Standing:
    return cpa.Standing(level, entity, 1, spend, n, target)


def test_cpa_pauses_only_after_the_minimum_spend_and_enough_rounds() -> None:
    rule = cpa.Rule(factor=2.0, min_spend_micros=10_000_000, rounds=2)
    above = [standing(30_000_000, 10)]  # 3.0 per activation, target 1.0 x 2
    pauses, streaks = cpa.evaluate(above, {}, rule)
    assert pauses == [] and streaks == {("campaign", 1): 1}
    pauses, streaks = cpa.evaluate(above, streaks, rule)
    assert [p.entity_id for p in pauses] == [1] and "3000000 micros" in pauses[0].reason
    # back under target: the streak ends
    assert cpa.evaluate([standing(30_000_000, 20)], streaks, rule) == ([], {})
    # below the minimum spend nothing is judged
    assert cpa.evaluate([standing(9_000_000, 0)], {("campaign", 1): 5}, rule) == ([], {})


def test_cpa_without_activations_counts_spend_against_one() -> None:
    rule = cpa.Rule(factor=2.0, min_spend_micros=0, rounds=1)
    assert not cpa.over_target(standing(2_000_000, 0), rule)
    assert cpa.over_target(standing(2_000_001, 0), rule)
    assert not cpa.over_target(standing(10**9, 0, target=0), rule)  # not a CPI/CPA campaign


def test_a_creative_is_not_paused_with_its_campaign() -> None:
    rule = cpa.Rule(factor=1.0, min_spend_micros=0, rounds=1)
    pauses, _ = cpa.evaluate(
        [standing(5_000_000, 1), standing(5_000_000, 1, level="creative", entity=7)], {}, rule
    )
    assert [(p.level, p.entity_id) for p in pauses] == [("campaign", 1)]


def test_click_through_urls_take_their_macros_and_the_click_id() -> None:
    url = "https://mmp.example/c?c=${CAMPAIGN_ID}&cr=${CREATIVE_ID}&d=${DEVICE_ID}"
    assert clickthrough.check(url) is None
    out = clickthrough.expand(url, click_id="c1", campaign_id=3, creative_id=4, device_id="")
    assert dict(parse_qsl(urlsplit(out).query, keep_blank_values=True)) == {
        "c": "3",
        "cr": "4",
        "d": "",
        "clickid": "c1",
    }
    placed = clickthrough.expand(
        "https://x.example/?id=${CLICK_ID}#top",
        click_id="c 2",
        campaign_id=1,
        creative_id=1,
        device_id="u",
    )
    assert placed == "https://x.example/?id=c%202&clickid=c%202#top"
    own = clickthrough.expand(
        "https://x.example/?clickid=${CLICK_ID}", click_id="c3", campaign_id=1, creative_id=1,
        device_id="",
    )  # fmt: skip
    assert own == "https://x.example/?clickid=c3"
    assert (
        clickthrough.expand(
            "https://x.example/p#f", click_id="c", campaign_id=1, creative_id=1, device_id=""
        )
        == "https://x.example/p?clickid=c#f"
    )
    assert "unknown macro" in (clickthrough.check("https://x.example/${IFA}") or "")
    assert clickthrough.check("ftp://x.example/") is not None
    assert clickthrough.check("https://x.example/a b") is not None


def test_put_records_calls_keep_to_one_stream_500_records_and_5_mib() -> None:
    small = [SpooledRecord("a", "k", b"x")] * 600
    assert len(chunk(small)) == 500
    mixed = [SpooledRecord("a", "k", b"x")] * 3 + [SpooledRecord("b", "k", b"x")]
    assert len(chunk(mixed)) == 3
    big = [SpooledRecord("a", "k", b"x" * (1024 * 1024 - 1))] * 6
    taken = chunk(big)
    assert len(taken) == 5 and sum(len(r.data) + 1 for r in taken) <= MAX_CALL_BYTES
    assert chunk([]) == []


def test_the_spool_keeps_order_across_segments_and_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    records = [f"record-{i:03d}".encode() * 3 for i in range(40)]
    assert spool.append(records[:20]) == 20 and spool.append(records[20:]) == 20
    assert spool.peek(5) == records[:5]
    spool.commit(7)
    assert spool.records == 33
    reopened = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    assert reopened.records == 33 and reopened.peek(100) == records[7:]
    reopened.commit(33)
    assert reopened.records == 0 and reopened.bytes == 0 and reopened.peek(10) == []
    assert len(list(tmp_path.glob("*.seg"))) == 1


def test_the_spool_is_bounded_and_drops_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.append([b"a" * 40, b"b" * 40, b"c" * 40]) == 2
    segment = next(tmp_path.glob("*.seg"))
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x00\x10abc")  # a record cut short by a crash
    reopened = Spool(tmp_path, max_bytes=100)
    assert reopened.peek(10) == [b"a" * 40, b"b" * 40]


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=10))
def test_query_parsing_reads_what_parse_qsl_reads(params: dict[str, str]) -> None:
    query = urlencode(params)
    assert parse_query(query) == dict(parse_qsl(query, keep_blank_values=True))
    assert parse_query(query.encode()) == parse_query(query)


def test_queries_that_are_not_text_or_too_long_are_refused() -> None:
    for query in (b"a=\xff", "a=%ff", "a=%C3", "&".join(f"p{i}=1" for i in range(65))):
        with pytest.raises(Refused) as info:
            parse_query(query)
        assert info.value.cause == "malformed"
    assert parse_query("a=1+2&b=%2B&c&d=") == {"a": "1 2", "b": "+", "c": "", "d": ""}


@given(
    st.integers(min_value=0, max_value=10**15),
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=1, max_value=10**12),
)
def test_cost_is_never_overstated_and_never_a_micro_short(price: int, bid_fx: int, fx: int) -> None:
    exact = Fraction(price * fx, bid_fx * 1000)
    cost = campaign_cost(price, bid_fx, fx)
    assert cost <= exact < cost + 1


def test_the_spool_reads_about_a_call_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**6, segment_bytes=1000)
    records = [bytes([i]) * 100 for i in range(30)]
    spool.append(records)
    assert spool.peek(500, max_bytes=250) == records[:3]  # 104 bytes a frame
    assert spool.peek(500, max_bytes=1) == records[:1]  # at least one
    spool.commit(25)  # across segment files
    assert spool.peek(500) == records[25:] and spool.records == 5
    assert len(list(tmp_path.glob("*.seg"))) == 1


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),
        st.one_of(
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
            st.from_regex(r"[a-z0-9]{1,6}(:[a-z0-9]{1,6}){0,3}", fullmatch=True),
        ),
        max_size=6,
    )
)
def test_parse_query_decodes_as_parse_qsl_does(params: dict[str, str]) -> None:
    """The fast paths (nothing escaped; only colons escaped, as the bidder writes a txid)
    decode exactly as the standard library does."""
    for query in (urlencode(params), urlencode(params).replace("%3A", "%3a")):
        assert parse_query(query) == dict(parse_qsl(query, keep_blank_values=True))
