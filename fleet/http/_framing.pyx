# cython: language_level=3, boundscheck=True, wraparound=True
"""The compiled twin of ``fleet.http.framing.PyFramer``: the same framing, statement for
statement, as a C extension type, so that llhttp's callbacks are calls into C rather than
Python frames. ``framing.py`` stays the reference and the documentation (its module docstring
holds the invariants); tests/fleet/http/test_http_parity.py feeds both the same bytes, whole and
in random splits, the hostile vectors included, and requires the same requests and verdicts.
A change to one is a change to the other."""

from collections import deque

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcmp

import httptools

from fleet.http.errors import HttpError
from fleet.http.frames import (
    BODY,
    CRLF,
    DONE,
    HEAD,
    IDLE,
    METHODS,
    VERSIONS,
    header_map,
    refusal_reason,
)

cdef int _IDLE = IDLE
cdef int _HEAD = HEAD
cdef int _BODY = BODY
cdef int _DONE = DONE
cdef str _GET = METHODS[b"GET"]
cdef str _POST = METHODS[b"POST"]
cdef str _HEAD_METHOD = METHODS[b"HEAD"]
cdef str _PUT = METHODS[b"PUT"]
cdef str _DELETE = METHODS[b"DELETE"]
cdef str _V11 = VERSIONS["1.1"]
cdef str _V10 = VERSIONS["1.0"]

# The headers the framing reads (framing._WATCHED), told apart by length, then compared in C
# without case (llhttp has checked the name's characters).
cdef enum:
    _W_NONE = 0
    _W_HOST = 1
    _W_EXPECT = 2
    _W_LENGTH = 3
    _W_TE = 4


cdef inline int _lower_is(bytes name, const char* lower, Py_ssize_t n):
    """Whether ``name`` (n bytes) is ``lower`` in any case."""
    cdef const unsigned char* c = <const unsigned char*>PyBytes_AS_STRING(name)
    cdef Py_ssize_t i
    cdef unsigned char x
    for i in range(n):
        x = c[i]
        if 65 <= x <= 90:
            x += 32
        if x != <unsigned char>lower[i]:
            return 0
    return 1


cdef inline int _watched(bytes name):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    if n == 4:
        return _W_HOST if _lower_is(name, b"host", 4) else _W_NONE
    if n == 14:
        return _W_LENGTH if _lower_is(name, b"content-length", 14) else _W_NONE
    if n == 6:
        return _W_EXPECT if _lower_is(name, b"expect", 6) else _W_NONE
    if n == 17:
        return _W_TE if _lower_is(name, b"transfer-encoding", 17) else _W_NONE
    return _W_NONE


cdef inline str _method(bytes name):
    """The method as text, the usual ones without a decode."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    cdef const char* c = PyBytes_AS_STRING(name)
    if n == 4 and memcmp(c, b"POST", 4) == 0:
        return _POST
    if n == 3 and memcmp(c, b"GET", 3) == 0:
        return _GET
    if n == 4 and memcmp(c, b"HEAD", 4) == 0:
        return _HEAD_METHOD
    if n == 3 and memcmp(c, b"PUT", 3) == 0:
        return _PUT
    if n == 6 and memcmp(c, b"DELETE", 6) == 0:
        return _DELETE
    return name.decode("ascii")


cdef bint _longer_than(bytes digits, Py_ssize_t limit) except -1:
    """``int(digits) > limit``: in C for plain digits (what llhttp lets through), else by
    ``int`` itself (which raises as the reference does)."""
    cdef const unsigned char* c = <const unsigned char*>PyBytes_AS_STRING(digits)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(digits), i
    cdef Py_ssize_t value = 0
    if n == 0 or n > 18:
        return int(digits) > limit
    for i in range(n):
        if not 48 <= c[i] <= 57:
            return int(digits) > limit
        value = value * 10 + (c[i] - 48)
    return value > limit
_ParserError = httptools.HttpParserError
_ParserUpgrade = httptools.HttpParserUpgrade


cdef class Request:
    """One complete request: ``framing.PyRequest`` as an extension type (the same fields, the
    same ``headers`` built on first use), so that the framer makes one without a Python frame.
    """

    def __init__(
        self,
        str method,
        str target,
        str version,
        list raw_headers,
        bytes body,
        bint keep_alive,
        double received_at,
        bint chunked=False,
    ):
        self.method = method
        self.target = target
        self.version = version
        self._headers = None
        self.raw_headers = raw_headers
        self.body = body
        self.keep_alive = keep_alive
        self.received_at = received_at
        self.chunked = chunked
        self.close = not keep_alive
        self.remote_ip = ""

    @property
    def headers(self):
        headers = self._headers
        if headers is None:
            self._headers = headers = header_map(self.raw_headers)
        return headers

    @property
    def path(self):
        return self.target.partition("?")[0]

    @property
    def query(self):
        return self.target.partition("?")[2]

    def header(self, bytes name, str default=""):
        """A header's value as text (``name`` in lower case)."""
        value = self.headers.get(name)
        return default if value is None else value.decode("latin-1")

    def __repr__(self):
        return f"<Request {self.method} {self.target[:80]!r} {self.version} {len(self.body)} B>"


cdef class Framer:
    """Feed it what a connection receives (``feed``); take ``requests`` in order; when ``error``
    is set, answer it after them and close."""

    def __init__(self, limits):
        self.limits = limits
        self._max_header = limits.max_header_bytes
        self._max_message = limits.max_message_bytes
        self._max_body = limits.max_body_bytes
        self._max_chunks = limits.max_chunks
        self.requests = deque()
        self.error = None
        self.phase = _IDLE
        self.since = 0.0
        self.continue_due = False
        self.upgrade_refused = False
        self._parser = parser = self._make_parser()
        self._feed_data = parser.feed_data
        self._get_method = parser.get_method
        self._get_http_version = parser.get_http_version
        self._should_keep_alive = parser.should_keep_alive
        self._should_upgrade = parser.should_upgrade
        self._now = 0.0
        self._stray = 0
        self._feed_done = 0
        self._begun = False
        self._feed_body = 0
        self._feed_len = 0
        self._reset_message()

    def _make_parser(self):
        return httptools.HttpRequestParser(self)

    cdef _reset_message(self):
        self._url = b""
        self._raw = []
        self._host = self._expect = self._length = self._te = None
        self._body = b""
        self._parts = None
        self._size = 0
        self._chunks = 0
        self._wire = 0
        self._chunked = False
        self._version = ""
        self._received_at = 0.0
        self._feed_body = 0
        self._pending = None

    # -- input ----------------------------------------------------------------------------------

    cpdef feed(self, bytes data, double now):
        """Frame ``data``. Complete requests go to ``requests``; a violation sets ``error``."""
        cdef Py_ssize_t n, lead, done_before
        if self.phase == _DONE or not data:
            return
        self._now = now
        self._feed_len = n = len(data)
        if self.phase == _IDLE:
            self.since = now
        if not self._begun and data[0] in (13, 10):  # CR or LF where a request line starts
            lead = n - len(data.lstrip(b"\r\n"))
            self._stray += lead
            if self._stray > 2 or not CRLF.startswith(data[:lead]):
                self._fail(HttpError(400, "stray bytes between requests"))
                return
            self.phase = _HEAD  # the header timer runs from the first byte, a CRLF too
        done_before = len(self.requests)
        self._feed_done = self._feed_body = 0
        try:
            self._feed_data(data)
        except _ParserUpgrade:
            self._upgraded()
            return
        except _ParserError as exc:
            if self.phase == _DONE:  # bytes after a request that closes: never read
                return
            self._fail(self._pending or HttpError(400, refusal_reason(exc)))
            return
        if self.phase == _DONE:
            return
        if self.phase == _IDLE:
            if len(self.requests) > done_before:
                self._stray_tail(data)
            return
        # a request in progress: its bytes on the wire (all of this read, less the bodies of
        # the requests it completed)
        self._wire += n - self._feed_done
        if self.phase == _HEAD and self._wire > self._max_header:
            self._fail(HttpError(431, "request head too large", "head_too_large"))
        elif self._wire > self._max_message:
            self._fail(HttpError(413, "request body too large", "body_too_large"))

    cdef _stray_tail(self, bytes data):
        """CR/LF after the last request completed in this read: one CRLF at most."""
        cdef Py_ssize_t tail, own_tail, stray
        cdef bytes body
        if data[-1] not in (10, 13):
            return
        cdef Request last = self.requests[-1]
        tail = len(data) - len(data.rstrip(b"\r\n"))
        body = last.body
        own_tail = 4  # the head's (or the last chunk's) CRLF CRLF
        if body and not last.chunked:  # a body that itself ends in CR/LF
            own_tail = len(body) - len(body.rstrip(b"\r\n"))
            if own_tail == len(body):
                own_tail += 4
        stray = tail - own_tail
        if stray > 0:
            self._stray += stray
            if self._stray > 2:
                self._fail(HttpError(400, "stray bytes between requests"))
            else:
                self.phase, self.since = _HEAD, self._now

    cdef _fail(self, error):
        self.error = error
        self.phase = _DONE
        self.continue_due = False

    cdef _upgraded(self):
        """llhttp stopped after a request asking to switch protocols: answer it, then close."""
        if self._pending is not None:
            self._fail(self._pending)
            return
        self.phase = _DONE
        self.upgrade_refused = True
        if self.requests:
            self.requests[-1].keep_alive = False
            self.requests[-1].close = True

    # -- llhttp's callbacks ---------------------------------------------------------------------

    def on_message_begin(self):
        self._reset_message()
        self._begun = True
        if self.phase == _IDLE:
            self.since = self._now
        self._received_at = self.since
        self.phase = _HEAD

    def on_url(self, bytes url):
        self._url += url

    def on_header(self, bytes name, bytes value):
        if self.phase == _BODY:  # a trailer: counted on the wire, never used
            return
        self._raw.append((name, value))
        cdef int which = _watched(name)
        if which != _W_NONE:  # most headers stop at their length
            self._watch(which, value)

    cdef _watch(self, int which, bytes value):
        """A header the framing reads, kept as ``Request.headers`` would show it."""
        value = value.strip(b" \t")
        if which == _W_HOST:
            if self._host is not None:
                self._refuse(HttpError(400, "more than one Host header"))
            self._host = value
        elif which == _W_LENGTH:
            self._length = value if self._length is None else self._length + b", " + value
        elif which == _W_TE:
            self._te = value if self._te is None else self._te + b", " + value
        else:
            self._expect = value if self._expect is None else self._expect + b", " + value

    def on_headers_complete(self):
        cdef Py_ssize_t limit = self._max_header
        if self._wire + self._feed_len > limit and self._head_size() > limit:
            self._refuse(HttpError(431, "request head too large", "head_too_large"))
        version = self._get_http_version()
        if version == "1.1":
            self._version = _V11
        elif version == "1.0":
            self._version = _V10
        else:
            self._version = ""
            self._refuse(HttpError(505, "HTTP version not supported"))
        te = self._te
        if te is not None:
            if self._version is _V10:
                self._refuse(HttpError(400, "Transfer-Encoding on HTTP/1.0"))
            if te.lower() != b"chunked":
                self._refuse(HttpError(501, "unsupported transfer coding"))
            self._chunked = True
        length = self._length
        if length is not None and _longer_than(length, self._max_body):
            self._refuse(HttpError(413, "request body too large", "body_too_large"))
        if self._should_upgrade():
            if self._get_method() == b"CONNECT":
                self._refuse(HttpError(405, "CONNECT is not served"))
            if te is not None or (length is not None and length != b"0"):
                self._refuse(HttpError(400, "an upgrade with a body is not served"))
        self.phase, self.since = _BODY, self._now
        expect = self._expect
        self.continue_due = expect is not None and expect.lower() == b"100-continue"

    def on_body(self, bytes data):
        cdef Py_ssize_t n = len(data)
        self._size += n
        self._feed_body += n
        if self._size > self._max_body:
            self._refuse(HttpError(413, "request body too large", "body_too_large"))
        if self._parts is not None:
            self._parts.append(data)
        elif self._body:
            self._parts = [self._body, data]
        else:
            self._body = data

    def on_chunk_header(self):
        self._chunks += 1
        if self._chunks > self._max_chunks:
            self._refuse(HttpError(413, "too many chunks", "too_many_chunks"))

    def on_message_complete(self):
        method = _method(self._get_method())
        cdef bint keep_alive = self._should_keep_alive()
        cdef Request request = Request.__new__(Request)  # Request(...) without the call
        request.method = method
        request.target = self._url.decode("latin-1")
        request.version = self._version
        request.raw_headers = self._raw
        request.body = self._body if self._parts is None else b"".join(self._parts)
        request.keep_alive = keep_alive
        request.received_at = self._received_at
        request.chunked = self._chunked
        request.close = not keep_alive
        request.remote_ip = ""
        self.requests.append(request)
        self._begun = False
        self._feed_done += self._feed_body
        self._stray = 0
        self.continue_due = False
        if keep_alive:
            self.phase, self.since = _IDLE, self._now
        else:
            self.phase = _DONE

    cdef Py_ssize_t _head_size(self):
        """The head's bytes as llhttp showed them (see ``PyFramer._head_size``)."""
        cdef Py_ssize_t size = 16 + len(self._url)
        for name, value in self._raw:
            size += len(name) + len(value) + 4
        return size

    cdef _refuse(self, error):
        """From a callback: stop llhttp here (the exception makes it return an error)."""
        self._pending = error
        raise error
