# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of ``bidlogger.copyfmt.encode_raw_py``: raw-sample rows as one Postgres
binary COPY stream, in one pass over the rows and one allocation. ``copyfmt`` holds the
reference and the format's description; tests/bidlogger/test_bidlogger_copy.py requires the
same bytes from both. A change to one is a change to the other.

``encode_chunks`` takes the flush's chunks (``bidlogger.raw.RawChunk``: columns as lists, the
events' JSON as newline-ended lines, each split off as it is copied); ``encode_raw`` takes rows
(a batch spooled by an earlier version)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport modf, rint
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

cdef const char* _HEADER = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"
cdef enum:
    HEADER_SIZE = 19
    FIELDS = 9
    ROW_FIXED = 2 + 12 + 4 + 16 + 4 + 32 + 4 + 12 + 5  # a row but its texts (event type <= 16)
cdef int64_t _PG_EPOCH_US = 946684800LL * 1000000LL  # 2000-01-01 UTC, Postgres's epoch
cdef int64_t _INT32_MIN = -2147483648LL
cdef int64_t _INT32_MAX = 2147483647LL


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _grow(Buffer* b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap
    cdef char* data
    if b.size + need <= cap:
        return 0
    while b.size + need > cap:
        cap = cap * 2 if cap else 65536
    data = <char*>realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline void _be16(char* p, int v) noexcept:
    p[0] = <char>((v >> 8) & 0xFF)
    p[1] = <char>(v & 0xFF)


cdef inline void _be32(char* p, int64_t v) noexcept:
    cdef int i
    for i in range(4):
        p[i] = <char>((v >> (24 - 8 * i)) & 0xFF)


cdef inline void _be64(char* p, int64_t v) noexcept:
    cdef int i
    for i in range(8):
        p[i] = <char>((v >> (56 - 8 * i)) & 0xFF)


cdef int _text(Buffer* b, const char* s, Py_ssize_t n, bint jsonb) except -1:
    cdef Py_ssize_t extra = 1 if jsonb else 0
    if n + extra > _INT32_MAX:
        raise OverflowError("a raw-sample field longer than Postgres takes")
    _grow(b, 4 + extra + n)
    _be32(b.data + b.size, n + extra)
    b.size += 4
    if jsonb:
        b.data[b.size] = 1  # jsonb's binary format: a version byte, then the JSON text
        b.size += 1
    memcpy(b.data + b.size, s, n)
    b.size += n
    return 0


cdef int64_t _micros(double ts) except? -1:
    """Epoch seconds to microseconds, rounded as ``datetime.fromtimestamp`` rounds."""
    cdef double whole
    cdef double frac
    if not (-1e11 < ts < 1e11):  # also false for nan
        raise OverflowError("raw-sample timestamp out of range")
    frac = modf(ts, &whole)
    cdef double us = rint(frac * 1e6)  # half to even, the default rounding mode
    return <int64_t>whole * 1000000 + <int64_t>us


cdef struct Span:
    int64_t first
    int64_t last
    bint seen


cdef int _row(
    Buffer* b, Span* span, double ts, str event_type, str txid, object partition_obj,
    int64_t campaign, int64_t creative, const char* logger, Py_ssize_t n_logger, int64_t seq,
    const char* json, Py_ssize_t n_json,
) except -1:
    cdef Py_ssize_t n
    cdef const char* s
    cdef int64_t micros = _micros(ts)
    cdef int64_t partition = partition_obj
    if partition < _INT32_MIN or partition > _INT32_MAX:
        raise OverflowError("bus partition out of range for integer")
    if not span.seen or micros < span.first:
        span.first = micros
    if not span.seen or micros > span.last:
        span.last = micros
    span.seen = True
    _grow(b, 2 + 12)
    _be16(b.data + b.size, FIELDS)
    _be32(b.data + b.size + 2, 8)
    _be64(b.data + b.size + 6, micros - _PG_EPOCH_US)
    b.size += 14
    s = PyUnicode_AsUTF8AndSize(event_type, &n)
    _text(b, s, n, False)
    s = PyUnicode_AsUTF8AndSize(txid, &n)
    _text(b, s, n, False)
    _grow(b, 8 + 12 + 12)
    _be32(b.data + b.size, 4)
    _be32(b.data + b.size + 4, partition)
    _be32(b.data + b.size + 8, 8)
    _be64(b.data + b.size + 12, campaign)
    _be32(b.data + b.size + 20, 8)
    _be64(b.data + b.size + 24, creative)
    b.size += 32
    _text(b, logger, n_logger, False)
    _grow(b, 12)
    _be32(b.data + b.size, 8)
    _be64(b.data + b.size + 4, seq)
    b.size += 12
    _text(b, json, n_json, True)
    return 0


cdef int _start(Buffer* b, Py_ssize_t size) except -1:
    b.data = NULL
    b.size = 0
    b.cap = 0
    _grow(b, HEADER_SIZE + 2 + size)
    memcpy(b.data, _HEADER, HEADER_SIZE)
    b.size = HEADER_SIZE
    return 0


cdef object _finish(Buffer* b, Span* span):
    _grow(b, 2)
    _be16(b.data + b.size, -1)
    b.size += 2
    return PyBytes_FromStringAndSize(b.data, b.size), span.first, span.last


def encode_raw(list rows, str logger_id, object flush_seq):
    """(stream, first, last): the rows ``(ts, event_type, txid, partition, campaign_id,
    creative_id, json)`` in the column order of ``copyfmt.RAW_COLUMNS``, with the header and the
    trailer; first and last are the earliest and latest timestamps in epoch microseconds.
    Raises OverflowError on a value its column cannot hold."""
    cdef Buffer b
    cdef Span span
    cdef Py_ssize_t n_logger
    cdef const char* logger = PyUnicode_AsUTF8AndSize(logger_id, &n_logger)
    cdef int64_t seq = flush_seq
    cdef bytes json
    span.first = span.last = 0
    span.seen = False
    b.data = NULL
    try:
        _start(&b, len(rows) * 256)
        for row in rows:
            json = row.json
            _row(
                &b, &span, row.ts, row.event_type, row.txid, row.partition, row.campaign_id,
                row.creative_id, logger, n_logger, seq, PyBytes_AS_STRING(json),
                PyBytes_GET_SIZE(json),
            )
        return _finish(&b, &span)
    finally:
        free(b.data)


def encode_chunks(list chunks, str logger_id, object flush_seq):
    """``encode_raw`` of the chunks' events, in order (the same bytes as of ``rows_of(chunks)``).
    Raises OverflowError on a value its column cannot hold, ValueError on a chunk whose lines
    do not match its columns."""
    cdef Buffer b
    cdef Span span
    cdef Py_ssize_t n_logger, i, n, size = 0
    cdef const char* logger = PyUnicode_AsUTF8AndSize(logger_id, &n_logger)
    cdef int64_t seq = flush_seq
    cdef list stamps, txids, campaigns, creatives
    cdef bytes lines
    cdef const char* pos
    cdef const char* end
    cdef const char* nl
    cdef str event_type
    span.first = span.last = 0
    span.seen = False
    b.data = NULL
    for chunk in chunks:  # the lines, and the columns with room for a long txid: no realloc
        size += len(chunk.lines) + len(chunk.stamps) * (ROW_FIXED + n_logger + 64)
    try:
        _start(&b, size)
        for chunk in chunks:
            event_type = chunk.event_type
            partition = chunk.partition
            stamps = chunk.stamps
            txids = chunk.txids
            campaigns = chunk.campaigns
            creatives = chunk.creatives
            lines = chunk.lines
            n = len(stamps)
            if len(txids) != n or len(campaigns) != n or len(creatives) != n:
                raise ValueError("a raw chunk's columns differ in length")
            pos = PyBytes_AS_STRING(lines)
            end = pos + PyBytes_GET_SIZE(lines)
            for i in range(n):
                nl = <const char*>memchr(pos, 10, end - pos)
                if nl == NULL:
                    raise ValueError("a raw chunk holds fewer JSON lines than events")
                _row(
                    &b, &span, stamps[i], event_type, txids[i], partition, campaigns[i],
                    creatives[i], logger, n_logger, seq, pos, nl - pos,
                )
                pos = nl + 1
            if pos != end:
                raise ValueError("a raw chunk holds more JSON lines than events")
        return _finish(&b, &span)
    finally:
        free(b.data)
