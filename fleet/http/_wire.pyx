# cython: language_level=3
"""The compiled twin of ``fleet.http.wire.PyResponse``: the same fields and ``to_bytes``, as an
extension type, so that a route makes its answer without a Python frame and the connection
formats the usual one (a 2xx but 204, no extra headers) into one buffer in C. ``wire.py`` stays
the reference; tests/fleet/http/test_http_answers.py requires the same bytes from both for
every status, body, content type, close, HTTP/1.0 keep-alive and HEAD."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from fleet.http.heads import STATUS_LINES, response_bytes

cdef bytes _CONTENT_TYPE = b"Content-Type: "
cdef bytes _CONTENT_LENGTH = b"Content-Length: "
cdef bytes _CLOSE = b"Connection: close\r\n"
cdef bytes _KEEP_ALIVE = b"Connection: keep-alive\r\n"


cdef inline char* _put(char* out, bytes piece):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(piece)
    memcpy(out, PyBytes_AS_STRING(piece), n)
    return out + n


cdef inline char* _crlf(char* out):
    out[0] = 13
    out[1] = 10
    return out + 2


cdef bytes _plain(bytes status_line, bytes content_type, bytes body, bytes connection, bint head):
    """``wire._PLAIN``: status line, Content-Type if there is a body, Content-Length,
    Connection if any, the blank line, the body unless answering HEAD; one allocation."""
    cdef Py_ssize_t length = PyBytes_GET_SIZE(body)
    cdef char digits[24]
    cdef Py_ssize_t n_digits = 0, value = length, size, i
    while True:
        digits[n_digits] = 48 + value % 10
        n_digits += 1
        value //= 10
        if value == 0:
            break
    size = PyBytes_GET_SIZE(status_line) + PyBytes_GET_SIZE(_CONTENT_LENGTH) + n_digits + 4
    if length:
        size += PyBytes_GET_SIZE(_CONTENT_TYPE) + PyBytes_GET_SIZE(content_type) + 2
    if connection is not None:
        size += PyBytes_GET_SIZE(connection)
    if not head:
        size += length
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* at = PyBytes_AS_STRING(out)
    at = _put(at, status_line)
    if length:
        at = _crlf(_put(_put(at, _CONTENT_TYPE), content_type))
    at = _put(at, _CONTENT_LENGTH)
    for i in range(n_digits):
        at[i] = digits[n_digits - 1 - i]
    at = _crlf(at + n_digits)
    if connection is not None:
        at = _put(at, connection)
    at = _crlf(at)
    if not head:
        _put(at, body)
    return out


cdef class Response:
    """What a route handler answers (see ``wire.PyResponse``)."""

    def __init__(
        self,
        int status,
        body=b"",
        headers=(),
        content_type=b"application/json",
        bint close=False,
    ):
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type
        self.close = close

    def to_bytes(self, *, bint close, bint keep_alive_10=False, bint head=False):
        return self.answer(close, keep_alive_10, head)

    cdef bytes answer(self, bint close, bint keep_alive_10, bint head):
        cdef int status = self.status
        close = close or self.close
        if (
            not self.headers
            and 200 <= status < 300
            and status != 204
            and type(self.body) is bytes
            and type(self.content_type) is bytes
        ):
            status_line = STATUS_LINES.get(status)
            if status_line is None:
                status_line = b"HTTP/1.1 %d Status\r\n" % status
            return _plain(
                status_line,
                self.content_type,
                self.body,
                _CLOSE if close else (_KEEP_ALIVE if keep_alive_10 else None),
                head,
            )
        extra = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in self.headers)
        return response_bytes(
            status,
            self.body,
            headers=extra,
            content_type=self.content_type,
            close=close,
            keep_alive_10=keep_alive_10,
            omit_body=head,
        )

    def _fields(self):
        return (self.status, self.body, self.headers, self.content_type, self.close)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # as a dataclass's: equal by value, mutable

    def __repr__(self):
        return (
            f"Response(status={self.status!r}, body={self.body!r}, headers={self.headers!r}, "
            f"content_type={self.content_type!r}, close={self.close!r})"
        )
