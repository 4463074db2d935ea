"""Answers as bytes: status lines and whole responses in one buffer. Shared by the reference
response (``wire.PyResponse``), its compiled twin (fleet/http/_wire.pyx) and the connections."""

from __future__ import annotations

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
INTERNAL_ERROR: Final = b'{"error":"internal error"}'


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
