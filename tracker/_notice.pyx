# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``tracker.notice.python_read_notice``: a notice URL as the bidder
writes it read in one pass over its bytes. ``tracker.notice`` holds the reference and the
refusal causes (``tracker.notices`` uses this reader where it is built);
tests/tracker/test_notice_reading.py requires the same notice or the same refusal (cause,
status, reason) from both, and from ``verify(kind, parse_query(query), keys, now)``. A change to
one is a change to the other.

The pass: every byte printable ASCII but ``+``, each ``%`` the start of ``%3A`` (a txid's colons,
the one escape the bidder writes) and none in a name, at most 64 parameters, none given twice or
with an empty name, every signed parameter present and a well-formed signature. It writes the
canonical form (``fleet.signing``: bid cid crid cur exp ts txid, then uk when given, then ev) into
one buffer, asks the key set which key made the signature (``KeySet.match``: every key tried,
constant-time comparisons), then checks the path, the integers, the expiry and the price. Any
query or notice outside that (anything refused, too) is handed to the reference whole, so the
answer and its cause never depend on which reader ran."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp, memcpy

from tracker.notice import MAX_PRICE_MICROS as _MAX_PRICE_MICROS_OBJ
from tracker.notice import MONEY_KINDS as _MONEY_KINDS
from tracker.notice import PRICED_KINDS as _PRICED_KINDS
from tracker.notice import Notice
from tracker.notice import python_read_notice as _reference

ctypedef unsigned long long u64

cdef enum:
    # the parameters a notice URL carries, by position in the canonical form where signed
    F_BID = 0
    F_CID = 1
    F_CRID = 2
    F_CUR = 3
    F_EXP = 4
    F_TS = 5
    F_TXID = 6
    F_UK = 7
    F_EV = 8
    F_SIG = 9
    F_PRICE = 10
    F_LOSS = 11
    N_FIELDS = 12
    MAX_FIELDS = 64  # as tracker.notice.parse_query's default
    MAX_VALUES = 1536  # the signed values' bytes in all: a longer query goes to the reference
    FORM_SIZE = 2048
    SIGNATURE_HEX = 32

cdef u64 _MAX_PRICE = _MAX_PRICE_MICROS_OBJ
# the head of each signed parameter's field in the canonical form, "<len>:<name>", by field
cdef const char* _HEADS = b"3:bid3:cid4:crid3:cur3:exp2:ts4:txid2:uk2:ev"
cdef Py_ssize_t _HEAD_AT[9]
cdef Py_ssize_t _HEAD_SIZE[9]
_HEAD_AT[:] = [0, 5, 10, 16, 21, 26, 30, 36, 40]
_HEAD_SIZE[:] = [5, 5, 6, 5, 5, 4, 6, 4, 4]


cdef inline int _field(const char* p, Py_ssize_t n) noexcept:
    """Which parameter the name at ``p`` is, or -1 for one the tracker does not read."""
    if n == 2:
        if p[0] == b"t" and p[1] == b"s":
            return F_TS
        if p[0] == b"u" and p[1] == b"k":
            return F_UK
        if p[0] == b"e" and p[1] == b"v":
            return F_EV
    elif n == 3:
        if memcmp(p, b"bid", 3) == 0:
            return F_BID
        if memcmp(p, b"cid", 3) == 0:
            return F_CID
        if memcmp(p, b"cur", 3) == 0:
            return F_CUR
        if memcmp(p, b"exp", 3) == 0:
            return F_EXP
        if memcmp(p, b"sig", 3) == 0:
            return F_SIG
    elif n == 4:
        if memcmp(p, b"crid", 4) == 0:
            return F_CRID
        if memcmp(p, b"txid", 4) == 0:
            return F_TXID
        if memcmp(p, b"loss", 4) == 0:
            return F_LOSS
    elif n == 5:
        if memcmp(p, b"price", 5) == 0:
            return F_PRICE
    return -1


cdef inline Py_ssize_t _decode_into(char* out, const char* s, Py_ssize_t n) noexcept:
    """Copy ``s[:n]`` to ``out`` with each ``%3A`` (checked by the pass) as ``:``; its length."""
    cdef Py_ssize_t i = 0, o = 0
    while i < n:
        if s[i] == b"%":
            out[o] = b":"
            i += 3
        else:
            out[o] = s[i]
            i += 1
        o += 1
    return o


cdef inline Py_ssize_t _put_int(char* out, Py_ssize_t value) noexcept:
    """``value`` (>= 0) in decimal at ``out``; the number of digits written."""
    cdef char digits[24]
    cdef Py_ssize_t n = 0, i
    while True:
        digits[n] = <char>(48 + value % 10)
        value //= 10
        n += 1
        if value == 0:
            break
    for i in range(n):
        out[i] = digits[n - 1 - i]
    return n


cdef inline int _digits(const char* s, Py_ssize_t n, u64* value) noexcept:
    """A whole number of 1 to 19 ASCII digits (leading zeros allowed, as ``int`` reads them)."""
    cdef Py_ssize_t i
    cdef u64 v = 0
    if n < 1 or n > 19:
        return 0
    for i in range(n):
        if s[i] < b"0" or s[i] > b"9":
            return 0
        v = v * 10 + <u64>(s[i] - 48)
    value[0] = v
    return 1


cdef inline int _price(const char* s, Py_ssize_t n, u64* micros) noexcept:
    """``tracker.notice.parse_price`` of a plain decimal CPM: 1 with its micros; 0 for anything
    else (the reference reads it: an empty or unsubstituted macro, or a refusal)."""
    cdef Py_ssize_t i = 0, whole = 0, fraction
    cdef u64 units = 0, part = 0
    while i < n and b"0" <= s[i] <= b"9":
        units = units * 10 + <u64>(s[i] - 48)
        i += 1
    whole = i
    if whole == 0 or whole > 10 or (whole > 1 and s[0] == b"0"):
        return 0
    if i < n:
        if s[i] != b".":
            return 0
        i += 1
        fraction = n - i
        if fraction < 1 or fraction > 18:
            return 0
        while i < n:
            if s[i] < b"0" or s[i] > b"9":
                return 0
            if i - whole - 1 < 6:
                part = part * 10 + <u64>(s[i] - 48)
            elif s[i] != b"0":
                return 0  # more than six significant decimals
            i += 1
        while fraction < 6:
            part *= 10
            fraction += 1
    micros[0] = units * 1000000 + part
    return micros[0] <= _MAX_PRICE


cdef str _text(const char* s, Py_ssize_t start, Py_ssize_t n, Py_ssize_t escapes):
    cdef char buffer[FORM_SIZE]
    if not escapes:
        return PyUnicode_DecodeASCII(s + start, n, NULL)
    return PyUnicode_DecodeASCII(buffer, _decode_into(buffer, s + start, n), NULL)


cdef object _read(str kind, bytes query, object keys, object now):
    """The notice, or None when the reference must read the query."""
    cdef const char* s = PyBytes_AS_STRING(query)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(query)
    cdef Py_ssize_t starts[N_FIELDS]
    cdef Py_ssize_t sizes[N_FIELDS]
    cdef Py_ssize_t escapes[N_FIELDS]
    cdef Py_ssize_t other_starts[MAX_FIELDS]
    cdef Py_ssize_t other_sizes[MAX_FIELDS]
    cdef Py_ssize_t i = 0, start, equals, name_size, escaped, parts = 0, others = 0, k
    cdef Py_ssize_t total = 0, o = 0, size
    cdef unsigned int seen = 0
    cdef int field
    cdef unsigned char c
    cdef char form[FORM_SIZE]
    cdef u64 bid, cid, crid, exp, ts, price = 0, reason = 0
    if n == 0:
        return None
    while True:  # one parameter a turn
        start = i
        equals = -1
        escaped = 0
        while i < n:
            c = <unsigned char>s[i]
            if c == b"&":
                break
            if c < 0x21 or c > 0x7E or c == b"+":
                return None
            if c == b"=":
                if equals < 0:
                    equals = i
            elif c == b"%":
                if equals < 0 or i + 2 >= n or s[i + 1] != b"3" or s[i + 2] != b"A":
                    return None
                escaped += 1
                i += 2
            i += 1
        parts += 1
        if parts > MAX_FIELDS:
            return None
        name_size = (equals if equals >= 0 else i) - start
        if name_size == 0:
            return None
        field = _field(s + start, name_size)
        if field < 0:
            for k in range(others):
                if other_sizes[k] == name_size and memcmp(
                    s + other_starts[k], s + start, name_size
                ) == 0:
                    return None
            other_starts[others] = start
            other_sizes[others] = name_size
            others += 1
        else:
            if seen & (1u << field):
                return None
            seen |= 1u << field
            starts[field] = equals + 1 if equals >= 0 else i
            sizes[field] = i - starts[field]
            escapes[field] = escaped
            if field <= F_EV:
                total += sizes[field]
        if i >= n:
            break
        i += 1  # the '&'
    # every signed parameter but uk, and a signature of 32 lowercase hex digits
    if (seen & 0x17F) != 0x17F or not (seen & (1u << F_SIG)):
        return None
    if sizes[F_SIG] != SIGNATURE_HEX or escapes[F_SIG]:
        return None
    for k in range(SIGNATURE_HEX):
        c = <unsigned char>s[starts[F_SIG] + k]
        if not (b"0" <= c <= b"9" or b"a" <= c <= b"f"):
            return None
    if total > MAX_VALUES:
        return None
    # the canonical form, names in code-point order, uk when given, ev last
    for field in range(F_EV + 1):
        if field == F_UK and not (seen & (1u << F_UK)):
            continue
        memcpy(form + o, _HEADS + _HEAD_AT[field], _HEAD_SIZE[field])
        o += _HEAD_SIZE[field]
        size = sizes[field] - 2 * escapes[field]
        o += _put_int(form + o, size)
        form[o] = b":"
        o += 1
        if escapes[field]:
            o += _decode_into(form + o, s + starts[field], sizes[field])
        else:
            memcpy(form + o, s + starts[field], sizes[field])
            o += sizes[field]
    index = keys.match(
        PyBytes_FromStringAndSize(form, o),
        PyUnicode_DecodeASCII(s + starts[F_SIG], SIGNATURE_HEX, NULL),
    )
    if index is None:
        return None
    ev = _text(s, starts[F_EV], sizes[F_EV], escapes[F_EV])
    if ev != kind:
        return None
    if (
        escapes[F_BID] or escapes[F_CID] or escapes[F_CRID] or escapes[F_EXP] or escapes[F_TS]
        or not _digits(s + starts[F_BID], sizes[F_BID], &bid)
        or not _digits(s + starts[F_CID], sizes[F_CID], &cid)
        or not _digits(s + starts[F_CRID], sizes[F_CRID], &crid)
        or not _digits(s + starts[F_EXP], sizes[F_EXP], &exp)
        or not _digits(s + starts[F_TS], sizes[F_TS], &ts)
    ):
        return None
    expires = exp
    if not now < expires:
        return None
    price_micros = None
    state = "absent"
    if kind in _PRICED_KINDS and seen & (1u << F_PRICE):
        if escapes[F_PRICE] or not _price(s + starts[F_PRICE], sizes[F_PRICE], &price):
            return None  # empty, a macro, or refused: the reference says which
        if price > bid and kind in _MONEY_KINDS:
            return None
        price_micros = price
        state = "given"
    loss_reason = 0
    if kind == "loss" and seen & (1u << F_LOSS) and not escapes[F_LOSS]:
        size = sizes[F_LOSS]
        if 1 <= size <= 9 and _digits(s + starts[F_LOSS], size, &reason):
            loss_reason = reason
    txid = _text(s, starts[F_TXID], sizes[F_TXID], escapes[F_TXID])
    cur = _text(s, starts[F_CUR], sizes[F_CUR], escapes[F_CUR])
    signed = {
        "ev": ev,
        "txid": txid,
        "cid": PyUnicode_DecodeASCII(s + starts[F_CID], sizes[F_CID], NULL),
        "crid": PyUnicode_DecodeASCII(s + starts[F_CRID], sizes[F_CRID], NULL),
        "bid": PyUnicode_DecodeASCII(s + starts[F_BID], sizes[F_BID], NULL),
        "cur": cur,
        "ts": PyUnicode_DecodeASCII(s + starts[F_TS], sizes[F_TS], NULL),
        "exp": PyUnicode_DecodeASCII(s + starts[F_EXP], sizes[F_EXP], NULL),
    }
    user_key = ""
    if seen & (1u << F_UK):
        user_key = _text(s, starts[F_UK], sizes[F_UK], escapes[F_UK])
        signed["uk"] = user_key
    return Notice(
        kind,
        txid,
        cid,
        crid,
        bid,
        cur,
        ts,
        expires,
        user_key,
        signed,
        price_micros,
        state,
        loss_reason,
        index,
    )


def read_notice(str kind, query, keys, now):
    """``tracker.notice.python_read_notice``: the same notice or the same refusal, compiled."""
    cdef object notice
    if type(query) is str:
        if not (<str>query).isascii():
            return _reference(kind, query, keys, now)
        notice = _read(kind, (<str>query).encode("ascii"), keys, now)
    elif type(query) is bytes:
        notice = _read(kind, <bytes>query, keys, now)
    else:
        notice = None
    if notice is None:
        return _reference(kind, query, keys, now)
    return notice
