"""The repair path of the OpenRTB decoder, taken only when the fast msgspec decode fails.

The body is decoded to plain objects and walked against the Struct type tree: what can be
coerced is (numbers in strings, bools as ints, integral floats, ids as numbers, a lone object or
a comma-separated string where a list goes); a value that cannot be is dropped so that the field
keeps its default, unless the field is ``CRITICAL`` (dropping it would loosen a restriction or
misprice a bid), in which case the request is rejected with the field path.

So ``null``, ``""`` and ``" "`` in a field that is not a string read as absent, wherever they
stand, unless the field is critical: a blank floor, currency or block list is not a request we
can price. ``imp.secure`` is not critical: read as absent it means "unknown", as the
specification says of an omitted flag, and the worst that follows is an insecure creative the
exchange does not show; no money moves on it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from bidder.errors import BadRequest
from bidder.openrtb import BidRequest

# Fields whose bad value rejects the request rather than being dropped: dropping would loosen
# a restriction (block lists, privacy, private auctions) or misprice or misplace a bid.
CRITICAL: Final = frozenset(
    {
        ("BidRequest", "id"),
        ("BidRequest", "imp"),
        ("BidRequest", "at"),
        ("BidRequest", "cur"),
        ("BidRequest", "bcat"),
        ("BidRequest", "badv"),
        ("BidRequest", "bapp"),
        ("Imp", "id"),
        ("Imp", "bidfloor"),
        ("Imp", "bidfloorcur"),
        ("Imp", "pmp"),
        ("Banner", "format"),
        ("Banner", "w"),
        ("Banner", "h"),
        ("Banner", "battr"),
        ("Video", "battr"),
        ("Video", "mimes"),
        ("Video", "minduration"),
        ("Video", "maxduration"),
        ("Audio", "battr"),
        ("Native", "battr"),
        ("Format", "w"),
        ("Format", "h"),
        ("Pmp", "private_auction"),
        ("Pmp", "deals"),
        ("Deal", "id"),
        ("Deal", "bidfloor"),
        ("Deal", "bidfloorcur"),
        ("Deal", "at"),
        ("Deal", "wseat"),
        ("Deal", "wadomain"),
        ("Regs", "coppa"),
        ("Regs", "gdpr"),
        ("Regs", "us_privacy"),
        ("RegsExt", "gdpr"),
        ("RegsExt", "us_privacy"),
        ("Device", "lmt"),
    }
)

_raw_decoder: Final = msgspec.json.Decoder()
_REQUEST_TYPE: Final = mi.type_info(BidRequest)
_MSGSPEC_ERROR = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `([^`]*)`")
_INVALID: Final = object()


def short(message: str, limit: int = 120) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def decode_repaired(body: bytes) -> BidRequest:
    try:
        raw = _raw_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {short(str(exc))}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise BadRequest("request: must be a JSON object")
    assert isinstance(_REQUEST_TYPE, mi.StructType)
    repaired = _repair_struct(raw, _REQUEST_TYPE, "")
    try:
        return msgspec.convert(repaired, BidRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(_reason(str(exc))) from None


def _reason(message: str) -> str:
    """``Expected `int`, got `str` - at `$.imp[0].w``` -> ``imp[0].w: expected int, got str``."""
    m = _MSGSPEC_ERROR.match(message)
    if m is None:  # pragma: no cover - the pattern matches any string
        return short(message)
    what = m.group("what")
    path = (m.group("path") or "").lstrip(".")
    missing = _MISSING.match(what)
    if missing is not None:
        name = missing.group(1)
        return short(f"{path}.{name}: required" if path else f"{name}: required")
    what = what.replace("`", "")
    what = what[:1].lower() + what[1:]
    return short(f"{path}: {what}" if path else what)


def _repair_struct(raw: dict[str, Any], t: mi.StructType, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    owner = t.cls.__name__
    for f in t.fields:
        if f.encode_name not in raw:
            continue
        value = raw[f.encode_name]
        where = f"{path}.{f.encode_name}" if path else f.encode_name
        critical = (owner, f.name) in CRITICAL
        if value is None and not _nullable(f.type):
            continue  # null for "absent": the default serves
        fixed = _repair(value, f.type, where, critical)
        if fixed is _INVALID:
            if critical:
                raise BadRequest(f"{where}: cannot read {type(value).__name__} {_peek(value)}")
            continue
        out[f.encode_name] = fixed
    return out


def _peek(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _nullable(t: mi.Type) -> bool:
    return isinstance(t, mi.NoneType | mi.AnyType) or (
        isinstance(t, mi.UnionType) and any(isinstance(m, mi.NoneType) for m in t.types)
    )


def _repair(value: Any, t: mi.Type, path: str, critical: bool) -> Any:
    if isinstance(t, mi.AnyType):
        return value
    if isinstance(t, mi.UnionType):
        if value is None and _nullable(t):
            return None
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        for m in members:  # an exact kind first: "300" for str | dict stays a string
            if _same_kind(value, m):
                return _repair(value, m, path, critical)
        for m in members:
            fixed = _repair(value, m, path, critical)
            if fixed is not _INVALID:
                return fixed
        return _INVALID
    if isinstance(t, mi.IntType):
        return _to_int(value)
    if isinstance(t, mi.FloatType):
        return _to_float(value)
    if isinstance(t, mi.StrType):
        return _to_str(value)
    if isinstance(t, mi.BoolType):
        n = _to_int(value)
        return _INVALID if n is _INVALID else bool(n)
    if isinstance(t, mi.StructType):
        return _repair_struct(value, t, path) if isinstance(value, dict) else _INVALID
    if isinstance(t, mi.DictType):
        return value if isinstance(value, dict) else _INVALID
    if isinstance(t, mi.ListType):
        return _repair_list(value, t.item_type, path, critical)
    return _INVALID


def _repair_list(value: Any, item: mi.Type, path: str, critical: bool) -> Any:
    if isinstance(value, str):
        items: list[Any] = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, dict | int | float):
        items = [value]
    else:
        return _INVALID
    out = []
    for i, v in enumerate(items):
        fixed = _repair(v, item, f"{path}[{i}]", critical) if v is not None else _INVALID
        if fixed is _INVALID:
            if critical:
                raise BadRequest(f"{path}[{i}]: cannot read {type(v).__name__} {_peek(v)}")
            continue
        out.append(fixed)
    return out


def _same_kind(value: Any, t: mi.Type) -> bool:
    if isinstance(t, mi.StrType):
        return isinstance(value, str)
    if isinstance(t, mi.DictType | mi.StructType):
        return isinstance(value, dict)
    if isinstance(t, mi.ListType):
        return isinstance(value, list)
    if isinstance(t, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(t, mi.FloatType):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value) if math.isfinite(value) else _INVALID
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("true", "false"):
            return int(s == "true")
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return _INVALID
        return round(f) if math.isfinite(f) else _INVALID
    return _INVALID


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        f = float(value)
        return f if math.isfinite(f) else _INVALID
    if isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return _INVALID
        return f if math.isfinite(f) else _INVALID
    return _INVALID


def _to_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return _INVALID
