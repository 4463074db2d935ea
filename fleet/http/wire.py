"""Responses on the wire: what a route answers (``Response``), whole answers in one buffer
(fleet/http/heads.py), content negotiation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from fleet.http.heads import CONTINUE as CONTINUE
from fleet.http.heads import STATUS_LINES as STATUS_LINES
from fleet.http.heads import STATUS_TEXT as STATUS_TEXT
from fleet.http.heads import error_response as error_response
from fleet.http.heads import response_bytes as response_bytes

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
