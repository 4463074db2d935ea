"""From the database's ``config_changed`` notifications to the cache keys they make stale.

Every insert, update and delete of a config row is announced (fleet/db migrations) as JSON
``{"table", "id", "version", "op"}``, where ``id`` is the row's key column: ``campaign_id`` for
targeting and frequency caps, ``currency`` for exchange rates. The watcher maps each change to
(namespace, key) pairs with a :class:`KeyMap` and invalidates them.

The default map: any change makes the whole ``config``/``snapshot`` stale, and the row-level
namespaces a service may register name the row (``campaign``/<id> for a campaign, its targeting
or its frequency caps; ``advertiser``/<id>; ``creative``/<id>; ``fx``/<currency>).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import msgspec

from cache.errors import CodecError

CONFIG_CHANNEL: Final = "config_changed"
SNAPSHOT: Final = ("config", "snapshot")

ROW_NAMESPACES: Final[Mapping[str, str]] = {
    "advertisers": "advertiser",
    "campaigns": "campaign",
    "targeting": "campaign",
    "frequency_caps": "campaign",
    "creatives": "creative",
    "fx_rates": "fx",
}


class Change(msgspec.Struct, frozen=True):
    table: str
    id: str | int | None
    version: int
    op: str


_decoder = msgspec.json.Decoder(Change)


def parse_change(payload: str | bytes) -> Change:
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"bad {CONFIG_CHANNEL} payload {payload!r}: {exc}") from exc


KeyMap = Callable[[Change], Iterable[tuple[str, str]]]


def default_keys(change: Change) -> list[tuple[str, str]]:
    """The default :data:`KeyMap` (see the module doc)."""
    keys = [SNAPSHOT]
    namespace = ROW_NAMESPACES.get(change.table)
    if namespace is not None and change.id is not None:
        keys.append((namespace, str(change.id)))
    return keys


def namespaces_of(key_map: KeyMap = default_keys) -> list[str]:
    """The namespaces a map can name, found by asking it about one change of every table: what
    the watcher flushes when it takes the lead (changes may have gone unannounced meanwhile)."""
    found: dict[str, None] = {}
    for table in ROW_NAMESPACES:
        for namespace, _ in key_map(Change(table=table, id="0", version=0, op="UPDATE")):
            found[namespace] = None
    return list(found)


def batch_keys(changes: Iterable[Change], key_map: KeyMap = default_keys) -> list[tuple[str, str]]:
    """The distinct keys a batch of changes makes stale, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for change in changes:
        for key in key_map(change):
            seen[key] = None
    return list(seen)
