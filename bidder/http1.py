"""HTTP/1.1 request framing for the bid path: bytes in, request heads and bodies out, no I/O.

Tornado's ``HTTP1Connection`` costs about 100 µs per request (a trivial 204 through an
``HTTPServerConnectionDelegate``: ~9,500 req/s on one core with wrk; the same framed here on
Tornado's ``IOStream``: ~31,000 req/s, and on uvloop's transports less again). That much per
request would make shedding under overload nearly as dear as bidding, so the bid path frames
requests itself (see bidder/app.py) and hands everything that is not a bid to an ordinary
``tornado.web.Application``.
Only what a server must get right is done here, and anything ambiguous is refused rather than
guessed (request smuggling lives in the ambiguities):

- request line ``METHOD SP target SP HTTP/1.x``; header block at most ``max_header_bytes``;
- obsolete line folding, a space before the colon, several different Content-Length values,
  Content-Length together with Transfer-Encoding, or a transfer coding other than ``chunked``:
  400 and the connection is closed (the framing of what follows cannot be trusted);
- keep-alive as RFC 9112 says: HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with
  ``Connection: keep-alive``.

Errors carry the status to answer and whether the connection must close (as h11 does).
"""

from __future__ import annotations

import re
from typing import Final

# Headers the bid path reads; every other header is skipped without decoding.
WANTED: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"content-encoding",
        b"accept-encoding",
        b"x-openrtb-version",
        b"connection",
        b"user-agent",
        b"expect",
    }
)
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSION_SAFE = re.compile(r"^[0-9][0-9.]{0,7}$")

STATUS_TEXT: Final = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
STATUS_LINES: Final = {
    code: f"HTTP/1.1 {code} {text}\r\n".encode() for code, text in STATUS_TEXT.items()
}


class HttpError(Exception):
    """A request that cannot be served: answer ``status`` (and close when ``close``)."""

    def __init__(self, status: int, reason: str, close: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close


class RequestHead:
    """The parsed head. ``headers`` holds only the WANTED ones (names lower-case, values
    stripped); ``block`` keeps every header line for handlers that want them all."""

    __slots__ = (
        "block",
        "chunked",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "target",
        "version",
    )

    def __init__(self, method: str, target: str, version: str, block: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version  # "HTTP/1.1" or "HTTP/1.0"
        self.block = block
        self.headers: dict[bytes, bytes] = {}
        self.content_length = 0
        self.chunked = False
        self.keep_alive = True

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: bytes, default: str = "") -> str:
        value = self.headers.get(name)
        return default if value is None else value.decode("latin-1")

    @property
    def expects_continue(self) -> bool:
        return self.headers.get(b"expect", b"").lower() == b"100-continue"


_METHODS: Final = {
    m: m.decode() for m in (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS")
}  # the common ones, decoded once
_VERSIONS: Final = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
_BLANK: Final = (32, 9)  # space, tab


def parse_head(block: bytes) -> RequestHead:
    """Parse the bytes before ``\\r\\n\\r\\n`` (request line and headers)."""
    request_line, _, rest = block.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[1]:
        raise HttpError(400, "malformed request line")
    method_b, target_b, version_b = parts
    method = _METHODS.get(method_b)
    if method is None:
        if not _TOKEN.match(method_b):
            raise HttpError(400, "malformed method")
        method = method_b.decode("ascii")
    version = _VERSIONS.get(version_b)
    if version is None:
        raise HttpError(400, "unsupported HTTP version")
    head = RequestHead(method, target_b.decode("latin-1"), version, rest)
    headers = head.headers
    length: bytes | None = None
    conflicting = False
    if rest:
        for line in rest.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            # no name, a space before the colon, or obsolete folding: refuse (RFC 9112 5.1)
            if not colon or not name or name[-1] in _BLANK or name[0] in _BLANK:
                raise HttpError(400, "malformed header line")
            name = name.lower()
            if name in WANTED:
                value = value.strip(b" \t")
                if name == b"content-length":
                    conflicting = conflicting or (length is not None and value != length)
                    length = value
                elif name in headers:  # a repeated list-valued header: join as RFC 9110 allows
                    headers[name] += b", " + value
                else:
                    headers[name] = value
    te = headers.get(b"transfer-encoding")
    if te is not None:
        if length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if te.lower() != b"chunked" or version == "HTTP/1.0":
            raise HttpError(400, "unsupported transfer coding")
        head.chunked = True
    elif length is not None:
        if conflicting:
            raise HttpError(400, "conflicting Content-Length values")
        if not length.isdigit() or len(length) > 15:
            raise HttpError(400, "malformed Content-Length")
        head.content_length = int(length)
    connection = headers.get(b"connection")
    if connection is not None:
        connection = connection.lower()
        if head.version == "HTTP/1.1":
            head.keep_alive = b"close" not in connection
        else:
            head.keep_alive = b"keep-alive" in connection
    elif head.version == "HTTP/1.0":
        head.keep_alive = False
    return head


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder with a limit on the decoded size.

    ``feed(buffer)`` consumes what it can from the front of ``buffer`` (a bytearray) and returns
    True once the last chunk and the trailers are read. Decoded data beyond ``limit`` is counted
    (``size``) but not kept (``too_large``), so that an oversized body can be drained.
    """

    __slots__ = ("_need", "_state", "body", "limit", "size", "too_large")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.size = 0
        self.too_large = False
        self._state = "size"  # size | data | data_end | trailer
        self._need = 0

    def feed(self, buf: bytearray) -> bool:
        while True:
            if self._state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise HttpError(400, "malformed chunk size")
                    return False
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    self._need = int(line, 16)
                except ValueError:
                    raise HttpError(400, "malformed chunk size") from None
                if self._need < 0 or len(line) > 15:
                    raise HttpError(400, "malformed chunk size")
                self._state = "data" if self._need else "trailer"
            elif self._state == "data":
                if not buf:
                    return False
                take = min(self._need, len(buf))
                self.size += take
                if self.size > self.limit:
                    self.too_large = True
                    self.body.clear()
                else:
                    self.body += buf[:take]
                del buf[:take]
                self._need -= take
                if self._need:
                    return False
                self._state = "data_end"
            elif self._state == "data_end":
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise HttpError(400, "malformed chunk")
                del buf[:2]
                self._state = "size"
            else:  # trailer lines until an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 8192:
                        raise HttpError(431, "trailers too large")
                    return False
                del buf[: end + 2]
                if end == 0:
                    return True


def openrtb_version(head: RequestHead, default: str = "2.6") -> str:
    """The ``x-openrtb-version`` to echo: the request's when it looks like a version."""
    value = head.headers.get(b"x-openrtb-version")
    if value is None:
        return default
    text = value.decode("latin-1").strip()
    return text if _VERSION_SAFE.match(text) else default


def accepts_gzip(head: RequestHead) -> bool:
    value = head.headers.get(b"accept-encoding")
    if not value:
        return False
    for item in value.lower().split(b","):
        coding, _, params = item.strip().partition(b";")
        if coding.strip() in (b"gzip", b"x-gzip", b"*"):
            q = params.strip()
            return not (q.startswith(b"q=") and _q_zero(q[2:]))
    return False


def _q_zero(q: bytes) -> bool:
    try:
        return float(q) == 0.0
    except ValueError:
        return False


def response_bytes(
    status: int,
    body: bytes = b"",
    *,
    headers: bytes = b"",
    content_type: bytes = b"application/json",
    close: bool = False,
    keep_alive_10: bool = False,
) -> bytes:
    """A complete response. ``headers`` are extra pre-formatted ``Name: value\\r\\n`` lines.
    204 and 1xx carry no body and no Content-Length."""
    parts = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(), headers]
    if status != 204 and status >= 200:
        if body:
            parts.append(b"Content-Type: " + content_type + b"\r\n")
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    elif keep_alive_10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if status != 204:
        parts.append(body)
    return b"".join(parts)
