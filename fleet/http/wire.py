"""Responses on the wire: status lines, whole answers in one buffer, content negotiation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

STATUS_TEXT: Final = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
STATUS_LINES: Final = {
    code: f"HTTP/1.1 {code} {text}\r\n".encode() for code, text in STATUS_TEXT.items()
}
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_PLAIN: Final = b"%s%sContent-Length: %d\r\n%s\r\n%s"  # what response_bytes makes of a 2xx


@dataclass(slots=True)
class PyResponse:
    """What a route handler answers (or it returns whole response bytes, or None to close the
    connection unanswered). ``headers`` are extra (name, value) pairs; Content-Length and
    Connection are the server's.

    The reference: ``Response`` is its compiled twin (fleet/http/_wire.pyx) where built."""

    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: bytes = b"application/json"
    close: bool = False

    def to_bytes(self, *, close: bool, keep_alive_10: bool = False, head: bool = False) -> bytes:
        if not self.headers and 200 <= self.status < 300 and self.status != 204:
            # the usual answer, in one formatting step
            if close or self.close:
                connection = b"Connection: close\r\n"
            else:
                connection = b"Connection: keep-alive\r\n" if keep_alive_10 else b""
            body = self.body
            return _PLAIN % (
                STATUS_LINES.get(self.status) or b"HTTP/1.1 %d Status\r\n" % self.status,
                b"Content-Type: " + self.content_type + b"\r\n" if body else b"",
                len(body),
                connection,
                b"" if head else body,
            )
        extra = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in self.headers)
        return response_bytes(
            self.status,
            self.body,
            headers=extra,
            content_type=self.content_type,
            close=close or self.close,
            keep_alive_10=keep_alive_10,
            omit_body=head,
        )


def response_bytes(
    status: int,
    body: bytes = b"",
    *,
    headers: bytes = b"",
    content_type: bytes = b"application/json",
    close: bool = False,
    keep_alive_10: bool = False,
    omit_body: bool = False,
) -> bytes:
    """A complete response. ``headers`` are extra pre-formatted ``Name: value\\r\\n`` lines.
    1xx, 204 and 304 carry no body and no Content-Length; ``omit_body`` (HEAD) keeps the
    Content-Length of the body it leaves out."""
    parts = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(), headers]
    bodiless = status < 200 or status in (204, 304)
    if not bodiless:
        if body:
            parts.append(b"Content-Type: " + content_type + b"\r\n")
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    elif keep_alive_10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not bodiless and not omit_body:
        parts.append(body)
    return b"".join(parts)


def error_response(status: int, reason: str, *, close: bool, headers: bytes = b"") -> bytes:
    """A JSON ``{"error": reason}`` answer."""
    return response_bytes(
        status, msgspec.json.encode({"error": reason}), headers=headers, close=close
    )


def accepts_gzip(value: bytes | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (q=0 refuses it)."""
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


try:
    from fleet.http._wire import Response as Response
except ImportError:  # the extension is not built: the reference
    Response = PyResponse  # type: ignore[misc,assignment]
