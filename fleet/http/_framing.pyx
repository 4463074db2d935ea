# cython: language_level=3, boundscheck=True, wraparound=True
"""The compiled twin of ``fleet.http.framing.PyFramer``: the same framing, statement for
statement, as a C extension type, so that llhttp's callbacks are calls into C rather than
Python frames. ``framing.py`` stays the reference and the documentation (its module docstring
holds the invariants); tests/fleet/http/test_http_parity.py feeds both the same bytes, whole and
in random splits, the hostile vectors included, and requires the same requests and verdicts.
A change to one is a change to the other."""

from collections import deque

import httptools

from fleet.http.errors import HttpError
from fleet.http.framing import (
    _CRLF,
    _METHODS,
    _NONE,
    _VERSIONS,
    _WATCHED,
    _WATCHED_LENGTHS,
    BODY,
    DONE,
    HEAD,
    IDLE,
    _reason,
    header_map,
)

cdef int _IDLE = IDLE
cdef int _HEAD = HEAD
cdef int _BODY = BODY
cdef int _DONE = DONE
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
        self._parser = self._make_parser()
        self._feed_data = self._parser.feed_data
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
        self._watched = None
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
            if self._stray > 2 or not _CRLF.startswith(data[:lead]):
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
            self._fail(self._pending or HttpError(400, _reason(exc)))
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
        if len(name) in _WATCHED_LENGTHS:  # a cheap first test; most headers stop here
            key = name.lower()
            if key in _WATCHED:
                self._watch(key, value)

    cdef _watch(self, bytes key, bytes value):
        """A header the framing reads, kept as ``Request.headers`` would show it."""
        cdef dict headers = self._watched
        if headers is None:
            self._watched = headers = {}
        if key in headers:
            if key == b"host":
                self._refuse(HttpError(400, "more than one Host header"))
            headers[key] += b", " + value.strip(b" \t")
        else:
            headers[key] = value.strip(b" \t")

    def on_headers_complete(self):
        cdef dict headers = self._watched if self._watched is not None else _NONE
        parser = self._parser
        cdef Py_ssize_t limit = self._max_header
        if self._wire + self._feed_len > limit and self._head_size() > limit:
            self._refuse(HttpError(431, "request head too large", "head_too_large"))
        self._version = version = _VERSIONS.get(parser.get_http_version(), "")
        if not version:
            self._refuse(HttpError(505, "HTTP version not supported"))
        te = headers.get(b"transfer-encoding")
        if te is not None:
            if version == "HTTP/1.0":
                self._refuse(HttpError(400, "Transfer-Encoding on HTTP/1.0"))
            if te.lower() != b"chunked":
                self._refuse(HttpError(501, "unsupported transfer coding"))
            self._chunked = True
        length = headers.get(b"content-length")
        if length is not None and int(length) > self._max_body:
            self._refuse(HttpError(413, "request body too large", "body_too_large"))
        if parser.should_upgrade():
            if parser.get_method() == b"CONNECT":
                self._refuse(HttpError(405, "CONNECT is not served"))
            if te is not None or (length is not None and length != b"0"):
                self._refuse(HttpError(400, "an upgrade with a body is not served"))
        self.phase, self.since = _BODY, self._now
        expect = headers.get(b"expect")
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
        parser = self._parser
        method_b = parser.get_method()
        method = _METHODS.get(method_b) or method_b.decode("ascii")
        cdef bint keep_alive = parser.should_keep_alive()
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
