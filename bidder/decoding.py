"""The OpenRTB request decoder: bytes in, a validated ``BidRequest`` out, or a reason.

Two paths (see ``bidder.openrtb`` for what is tolerated):

- fast: ``msgspec`` straight into the Structs with ``strict=False`` (str -> number/bool,
  0/1 -> bool, integral floats -> int);
- repair, only when the fast path fails validation (``bidder.lenient``).

A body nested deeper than the JSON decoder's recursion limit is malformed JSON (400), like any
other body the decoder cannot read.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from bidder.errors import BadRequest, InvalidRequest
from bidder.lenient import decode_repaired, short
from bidder.openrtb import BidRequest

_decoder: Final = msgspec.json.Decoder(BidRequest, strict=False)
TOO_DEEP: Final = "malformed JSON: nested too deeply"


def decode_request(body: bytes) -> BidRequest:
    """Decode and validate; raises ``BadRequest`` with a short reason naming the field path,
    or ``InvalidRequest`` (a no-bid) for a readable request that breaks a rule."""
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError:
        req = decode_repaired(body)  # the slow path, rarely taken
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {short(str(exc))}") from None
    except RecursionError:
        raise BadRequest(TOO_DEEP) from None
    validate(req)
    return req


def validate(req: BidRequest) -> None:
    """What a bid needs; everything else is the exchange's business.

    Without an id or an impression there is no bid request at all: ``BadRequest`` (400). A
    request that breaks a rule but is otherwise readable gets ``InvalidRequest`` (a no-bid)."""
    if not req.id:
        raise BadRequest("id: must be a non-empty string")
    if not req.imp:
        raise BadRequest("imp: must be a non-empty list")
    seen: set[str] = set()
    for i, imp in enumerate(req.imp):
        if not imp.id:
            raise BadRequest(f"imp[{i}].id: must be a non-empty string")
        if imp.id in seen:
            raise InvalidRequest(f"imp[{i}].id: duplicate {imp.id[:64]!r}", req)
        seen.add(imp.id)
        if not (math.isfinite(imp.bidfloor) and imp.bidfloor >= 0):
            raise InvalidRequest(f"imp[{i}].bidfloor: must be a finite number >= 0", req)
        if imp.pmp is not None:
            for j, deal in enumerate(imp.pmp.deals):
                if not deal.id:
                    raise InvalidRequest(
                        f"imp[{i}].pmp.deals[{j}].id: must be a non-empty string", req
                    )
                if not (math.isfinite(deal.bidfloor) and deal.bidfloor >= 0):
                    raise InvalidRequest(f"imp[{i}].pmp.deals[{j}].bidfloor: must be >= 0", req)
    if (req.site is not None) + (req.app is not None) + (req.dooh is not None) > 1:
        raise InvalidRequest("site/app/dooh: at most one may be present", req)
