"""``read_notice``, the tracker's one-pass reading of a notice URL (the pure-Python
``python_read_notice`` and its compiled twin, tracker/_notice.pyx), against the reference both
must equal: ``verify(kind, parse_query(query), keys, now)``, the same notice or the same refusal
(cause, status and reason), whatever the query; ``KeySet.match`` against ``key_index``; the
group commit's one future per batch."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import signing
from tracker import notices as notices_module
from tracker.batch import Outcomes, RowResult, SharedFuture
from tracker.errors import Refused
from tracker.notice import Notice, parse_query, python_read_notice, verify

try:
    from tracker._notice import read_notice as compiled_read_notice
except ImportError:  # the extension is not built: the pure reader alone is checked
    compiled_read_notice = None
READERS = (
    [python_read_notice]
    if compiled_read_notice is None
    else [
        python_read_notice,
        compiled_read_notice,
    ]
)

KEY = b"0123456789abcdef0123456789abcdef"
OLD = b"the previous key, still in flight"
OTHER = b"a key that is not ours"
NOW = 1_800_000_000.0
KEYS = signing.KeySet(KEY, (OLD,))


def outcome(read: Callable[[], Notice]) -> tuple[str, Any]:
    try:
        notice = read()
    except Refused as exc:
        return "refused", (exc.cause, exc.status, exc.reason)
    assert isinstance(notice, Notice)
    return "notice", notice


def both(
    kind: str, query: str | bytes, now: float = NOW
) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """The answer of every reader (all equal, else the first that differs) and the
    reference's."""
    reference = outcome(lambda: verify(kind, parse_query(query), KEYS, now))
    answers = [outcome(functools.partial(read, kind, query, KEYS, now)) for read in READERS]
    differing = [answer for answer in answers if answer != reference]
    return (differing or answers)[0], reference


def signed_query(kind: str, key: bytes, txid: str, user_key: str, price: int = 3_000_000) -> str:
    signer = signing.Signer(key)
    url = signer.bid_notice_urls(
        "http://t",
        (kind,),
        txid=txid,
        campaign_id=12,
        creative_id=58,
        price=price,
        currency="USD",
        timestamp=int(NOW),
        expires=int(NOW) + 3600,
        user_key=user_key,
    )[kind]
    return urlsplit(url).query


MUTATIONS = st.sampled_from(
    [
        "none",
        "lowercase-escape",
        "plus",
        "drop-sig",
        "drop-bid",
        "twice",
        "empty-part",
        "alter-cid",
        "extra",
        "bytes",
        "non-ascii-bytes",
        "short-sig",
        "big-number",
        "escaped-name",
        "colon-name",
        "truncated-escape",
        "control",
        "uppercase-sig",
        "escaped-sig",
        "extra-twice",
        "many",
        "empty-user-key",
        "escaped-loss",
        "leading-zeros",
    ]
)


def mutate(query: str, how: str) -> str | bytes:
    if how == "lowercase-escape":
        return query.replace("%3A", "%3a")
    if how == "plus":
        return query + "&partner=a+b"
    if how == "drop-sig":
        return "&".join(p for p in query.split("&") if not p.startswith("sig="))
    if how == "drop-bid":
        return "&".join(p for p in query.split("&") if not p.startswith("bid="))
    if how == "twice":
        return query + "&cid=12"
    if how == "empty-part":
        return query + "&"
    if how == "alter-cid":
        return query.replace("cid=12", "cid=13")
    if how == "extra":
        return query + "&click_id=abc"
    if how == "bytes":
        return query.encode("ascii")
    if how == "non-ascii-bytes":
        return query.encode("ascii") + b"&x=\xff"
    if how == "short-sig":
        return query.replace("&sig=", "&sig=0")
    if how == "big-number":
        return query.replace("cid=12", "cid=" + "9" * 20)
    if how == "escaped-name":
        return query.replace("txid=", "tx%69d=")
    if how == "colon-name":
        return query + "&a%3Ab=1&a:b=2"
    if how == "truncated-escape":
        return query + "&x=%3"
    if how == "control":
        return query + "&x=a\x7fb"
    if how == "uppercase-sig":
        return re.sub(r"sig=([0-9a-f]+)", lambda m: "sig=" + m.group(1).upper(), query)
    if how == "escaped-sig":
        return re.sub(r"sig=([0-9a-f]{2})", r"sig=\1%3A", query)
    if how == "extra-twice":
        return query + "&click_id=a&click_id=b"
    if how == "many":
        return query + "".join(f"&p{i}=1" for i in range(60))
    if how == "empty-user-key":
        return query.replace("&sig=", "&uk=&sig=") if "uk=" not in query else query
    if how == "escaped-loss":
        return query.replace("loss=", "loss=1%3A")
    if how == "leading-zeros":
        return query.replace("cid=12", "cid=0012")
    return query


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(signing.KINDS),
    path=st.sampled_from((*signing.KINDS, "same", "same", "same")),
    key=st.sampled_from([KEY, OLD, OTHER]),
    txid=st.one_of(
        st.from_regex(r"[a-z0-9]{1,6}(:[a-z0-9]{1,6}){0,3}", fullmatch=True),
        st.text(max_size=10),
    ),
    user_key=st.sampled_from(["", "u0123456789abcdef0123456789abcdef"]),
    price=st.sampled_from(
        [
            "2.5",
            "3",
            "4.25",
            "",
            "${AUCTION_PRICE}",
            "1e3",
            "-1",
            None,
            "0",
            "0.000001",
            "2.5000000",
            "2.5000001",
            "00.5",
            "2.",
            ".5",
            " 2.5",
            "2.5:",
            "9999999999.5",
            "0.0000001",
            "2.50000000000000000000",
            "${AUCTION_PRICE:B64}",
            "AUCTION_PRICE",
        ]
    ),
    loss=st.sampled_from(["102", "x", "", None]),
    late=st.sampled_from([0.0, 3599.0, 3600.0, 7200.0]),
    how=MUTATIONS,
)
def test_read_notice_answers_as_parse_query_and_verify_do(
    kind: str,
    path: str,
    key: bytes,
    txid: str,
    user_key: str,
    price: str | None,
    loss: str | None,
    late: float,
    how: str,
) -> None:
    query = signed_query(kind, key, txid, user_key)
    for macro, value in (("${AUCTION_PRICE}", price), ("${AUCTION_LOSS}", loss)):
        if value is None:  # the parameter left out
            query = "&".join(p for p in query.split("&") if macro not in p)
        else:
            query = query.replace(macro, quote(value, safe=""))
    fast, reference = both(kind if path == "same" else path, mutate(query, how), NOW + late)
    assert fast == reference


def test_the_bidders_own_urls_read_as_the_reference_reads_them() -> None:
    """Every kind, on both keys of the set and another, with and without a user key, each
    price (above the bid too), fresh and expired: the same notices and the same refusals."""
    notices = 0
    for kind in signing.KINDS:
        for key, index in ((KEY, 0), (OLD, 1), (OTHER, None)):
            for user_key in ("", "uabc"):
                for price in ("2.5", "4.25", "", "${AUCTION_PRICE}", "1e3"):
                    for late in (0.0, 3600.0):
                        query = signed_query(kind, key, "r1:1:b-0", user_key)
                        query = query.replace("${AUCTION_PRICE}", quote(price, safe=""))
                        query = query.replace("${AUCTION_LOSS}", "102")
                        fast, reference = both(kind, query, NOW + late)
                        assert fast == reference
                        if fast[0] == "notice":
                            notices += 1
                            assert fast[1].key_index == index
                            assert fast[1].user_key == user_key
    assert notices > 50


def billing_query(key: bytes) -> str:
    return signed_query("bill", key, "r1:1:b-0", "uabc").replace("${AUCTION_PRICE}", "2.5")


CASES = {
    # name: (path, query from a fresh billing URL, now) -> the expected verdict (cause or notice)
    "valid": ("bill", lambda q: q, NOW, None),
    "forged: no signature": ("bill", lambda q: re.sub(r"&sig=[0-9a-f]+", "", q), NOW, "forged"),
    "forged: a bad signature": (
        "bill",
        lambda q: re.sub(r"sig=[0-9a-f]+", "sig=xyz", q),
        NOW,
        "forged",
    ),
    "forged: a signed parameter missing": (
        "bill",
        lambda q: q.replace("&cur=USD", ""),
        NOW,
        "forged",
    ),
    "altered: the campaign": ("bill", lambda q: q.replace("cid=12", "cid=13"), NOW, "altered"),
    "altered: the bid": (
        "bill",
        lambda q: q.replace("bid=3000000", "bid=9000000"),
        NOW,
        "altered",
    ),
    "altered: another key": ("bill", lambda q: billing_query(OTHER), NOW, "altered"),
    "expired": ("bill", lambda q: q, NOW + 3600, "expired"),
    "wrong path": ("win", lambda q: q, NOW, "wrong_path"),
    "malformed: given twice": ("bill", lambda q: q + "&price=1", NOW, "malformed"),
    "malformed: not UTF-8": ("bill", lambda q: q.replace("USD", "%FF"), NOW, "malformed"),
    "unsubstituted macro": (
        "bill",
        lambda q: q.replace("price=2.5", "price=${AUCTION_PRICE}"),
        NOW,
        "price_missing",
    ),
    "empty price": ("bill", lambda q: q.replace("price=2.5", "price="), NOW, "price_missing"),
    "price not a CPM": (
        "bill",
        lambda q: q.replace("price=2.5", "price=2.5e1"),
        NOW,
        "price_invalid",
    ),
    "price above the bid": (
        "bill",
        lambda q: q.replace("price=2.5", "price=3.000001"),
        NOW,
        "price_above_bid",
    ),
}


@pytest.mark.parametrize("read", READERS, ids=lambda read: read.__module__)
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_verdict_and_cause_as_the_reference(case: str, read: Any) -> None:
    """Valid, forged, altered, expired, wrong-path, malformed and unsubstituted-macro URLs:
    each reader gives the reference's notice, or its refusal with the same cause, status and
    reason (the price macro's refusals are the route's: here the notice is read as missing)."""
    path, change, now, cause = CASES[case]
    query = change(billing_query(KEY))
    got = outcome(lambda: read(path, query, KEYS, now))
    assert got == outcome(lambda: verify(path, parse_query(query), KEYS, now))
    if cause is None:
        assert got[0] == "notice" and got[1].price_micros == 2_500_000
    elif cause == "price_missing":  # read, then refused by the route on /bill
        assert got[0] == "notice" and got[1].price_state == "missing"
    else:
        assert got[0] == "refused" and got[1][0] == cause


def test_the_compiled_reader_is_the_one_in_use() -> None:
    if compiled_read_notice is None:
        pytest.skip("the extension is not built")
    assert notices_module.read_notice is compiled_read_notice


def test_match_is_key_index_of_the_canonical_form() -> None:
    params = {"ev": "bill", "txid": "a:1:b", "cid": "1", "crid": "2", "bid": "3", "cur": "USD"}
    for key, index in ((KEY, 0), (OLD, 1), (OTHER, None)):
        signature = signing.sign(params, key)
        assert KEYS.match(signing.canonical(params), signature) == index
        assert KEYS.key_index(params, signature) == index


def test_a_batchs_one_future_outlives_a_cancelled_waiter() -> None:
    """The group commit answers a batch with one future that every notice's task awaits: one
    task cancelled (its client gone) leaves the future, and the others' answers, alone."""

    async def scenario() -> list[Any]:
        future = SharedFuture(loop=asyncio.get_running_loop())

        async def wait() -> Outcomes:
            return await future

        gone, stays = asyncio.create_task(wait()), asyncio.create_task(wait())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert not future.cancelled()
        future.set_result({("t", "bill"): RowResult(True, 7)})
        return list(await asyncio.gather(gone, stays, return_exceptions=True))

    gone, stays = asyncio.run(scenario())
    assert isinstance(gone, asyncio.CancelledError)
    assert stays == {("t", "bill"): RowResult(True, 7)}
