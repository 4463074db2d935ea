"""Records, bus messages, value codecs, memcached keys, versions, config change mapping."""

from __future__ import annotations

import pytest

from cache.changes import Change, batch_keys, default_keys, namespaces_of, parse_change
from cache.codec import (
    Message,
    Record,
    ValueCodec,
    check_namespace,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    l2_floor_key,
    l2_key,
    namespace_of_topic,
    topic,
)
from cache.errors import CodecError
from cache.versions import clock_version, effective_version, supersedes
from fleet.config import Advertiser, Campaign, ConfigSnapshot


def snapshot(n: int) -> ConfigSnapshot:
    campaigns = tuple(
        Campaign(
            id=i,
            advertiser_id=1,
            name=f"campaign {i} " + "x" * 200,
            goal_type="CPC",
            goal_price_micros=1_000_000,
            max_bid_cpm_micros=5_000_000,
            daily_budget_micros=10**9,
            total_budget_micros=10**10,
            version=i,
        )
        for i in range(n)
    )
    advertisers = (Advertiser(id=1, name="a", domain="a.com", version=1),)
    return ConfigSnapshot(advertisers=advertisers, campaigns=campaigns, version=n)


def test_snapshot_round_trips_typed_and_compressed_when_large() -> None:
    codec: ValueCodec[ConfigSnapshot] = ValueCodec(ConfigSnapshot, compress_min_bytes=1024)
    small, big = snapshot(1), snapshot(200)
    rec_small = codec.record(small, 7, 1.5)
    rec_big = codec.record(big, 8, 2.5)
    assert not rec_small.compressed and rec_big.compressed
    for rec, value in ((rec_small, small), (rec_big, big)):
        again = decode_record(encode_record(rec))
        assert again == rec
        assert codec.value_of(again) == value


def test_none_value_is_not_a_tombstone() -> None:
    codec: ValueCodec[int | None] = ValueCodec(int | None)
    rec = codec.record(None, 3, 0.0)
    assert rec.is_value and codec.value_of(rec) is None
    tomb = Record(version=4, loaded_at=0.0)
    assert not tomb.is_value
    with pytest.raises(CodecError):
        codec.value_of(tomb)


def test_message_round_trip_and_garbage_rejected() -> None:
    msg = Message("fill", "config", "snapshot", 12, "me", Record(12, 3.0, b"\x01", False))
    assert decode_message(encode_message(msg)) == msg
    with pytest.raises(CodecError):
        decode_message(b"\xc1garbage")
    with pytest.raises(CodecError):
        decode_record(b"\x93\x01")
    with pytest.raises(CodecError):
        ValueCodec(ConfigSnapshot).decode(b"\x01", False)


def test_topics_and_namespace_names() -> None:
    assert topic("config") == "co.cache.config"
    assert namespace_of_topic("co.cache.freq") == "freq"
    assert namespace_of_topic("ev.0001.bid") is None
    assert check_namespace("market_price-2") == "market_price-2"
    for bad in ("", "Config", "1x", "a b", "x" * 49, "co.cache"):
        with pytest.raises(ValueError):
            check_namespace(bad)


def test_l2_keys_are_valid_memcached_keys() -> None:
    assert l2_key("rtbf1", "config", "snapshot") == "rtbf1:config:snapshot"
    long_key = "u" * 500
    weird = "user with spaces\n"
    for key in (long_key, weird, "~floor", "#abc", "ünïcode"):
        mk = l2_key("rtbf1", "freq", key)
        assert len(mk) <= 250 and mk.isascii() and " " not in mk and "\n" not in mk
        assert mk != l2_floor_key("rtbf1", "freq")
    assert l2_key("p", "n", long_key) != l2_key("p", "n", long_key + "x")
    assert l2_key("p", "n", "k", "~lease") == "p:n:k~lease"


def test_effective_version_rules() -> None:
    # Source: the row's version, but never below what was known when the load started.
    assert effective_version(5, 3, 10**15, "source") == 5
    assert effective_version(5, 9, 10**15, "source") == 9
    assert effective_version(None, 9, 10**15, "source") == 9
    # Clock: wall microseconds, above anything known.
    assert effective_version(None, 0, 1_000, "clock") == 1_000
    assert effective_version(None, 5_000, 1_000, "clock") == 5_001
    assert clock_version(100, 100) == 101


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        ((5, True, 1.0), (4, True, 9.0), True),
        ((4, True, 9.0), (5, False, 1.0), False),
        ((5, True, 1.0), (5, False, 2.0), True),  # value at a tombstone's version wins
        ((5, False, 3.0), (5, True, 1.0), False),
        ((5, True, 2.0), (5, True, 1.0), True),  # a later load of the same version
        ((5, True, 1.0), (5, True, 1.0), False),
        ((5, False, 9.0), (5, False, 1.0), False),
    ],
)
def test_supersedes(
    new: tuple[int, bool, float], old: tuple[int, bool, float], expected: bool
) -> None:
    assert supersedes(*new, *old) is expected


def test_config_changes_map_to_keys() -> None:
    change = parse_change('{"table":"targeting","id":"42","version":17,"op":"UPDATE"}')
    assert change == Change(table="targeting", id="42", version=17, op="UPDATE")
    assert default_keys(change) == [("config", "snapshot"), ("campaign", "42")]
    fx = parse_change('{"table":"fx_rates","id":"EUR","version":3,"op":"DELETE"}')
    assert default_keys(fx) == [("config", "snapshot"), ("fx", "EUR")]
    other = Change(table="campaign_spend", id=None, version=1, op="UPDATE")
    assert default_keys(other) == [("config", "snapshot")]
    assert batch_keys([change, change, fx]) == [
        ("config", "snapshot"),
        ("campaign", "42"),
        ("fx", "EUR"),
    ]
    assert set(namespaces_of()) == {"config", "advertiser", "campaign", "creative", "fx"}
    with pytest.raises(CodecError):
        parse_change("{not json")
    with pytest.raises(CodecError):
        parse_change('{"table":"x"}')
