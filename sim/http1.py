"""HTTP/1.1 for the exchange's client side, with no I/O: request bytes out, response events in.

``ResponseParser.feed(data)`` returns the responses completed by ``data`` (several when a peer
sends them back to back). llhttp (through ``httptools``) does the framing: Content-Length,
chunked transfer coding (strict chunk sizes: ``-10`` or ``0x10`` are errors, not loops), and
for a response without either, the end of the connection (``feed_eof``). 1xx responses are
skipped; 204 and 304 have no body. Invariants: nothing is buffered here but the body of the
response being read, which never exceeds MAX_BODY_BYTES, and a head never exceeds
MAX_HEADER_BYTES on the wire; a violation raises HttpProtocolError and the connection is
dropped.
"""

from __future__ import annotations

import dataclasses
import zlib

import httptools

from sim.errors import HttpProtocolError

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes  # as received (still compressed when Content-Encoding says so)
    keep_alive: bool

    def decoded_body(self) -> bytes:
        """The body with a gzip/deflate Content-Encoding undone (HttpProtocolError if corrupt)."""
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return self.body
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise HttpProtocolError(f"unsupported content-encoding {encoding!r}")
        try:
            return zlib.decompress(self.body, 47)  # 32 + 15: gzip or zlib header
        except zlib.error as exc:
            raise HttpProtocolError(f"corrupt {encoding} body: {exc}") from None


def build_request(
    method: str,
    target: str,
    host: str,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    """A keep-alive HTTP/1.1 request; Content-Length is added when there is a body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ResponseParser:
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._out: list[Response] = []
        self._reset()
        self._in_message = False
        self._broken = False

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head_bytes = 0  # bytes of the head on the wire so far
        self._head_done = False
        self._until_eof = False

    @property
    def idle(self) -> bool:
        """No response has begun (a clean point to close the connection)."""
        return not self._in_message

    def feed(self, data: bytes) -> list[Response]:
        if self._broken:
            raise HttpProtocolError("the connection's framing was already broken")
        in_head = self._in_message and not self._head_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken = True
            raise HttpProtocolError(f"malformed response: {exc}") from None
        if self._in_message and not self._head_done:
            # a head still incomplete: everything read since it began is head
            self._head_bytes += len(data) if in_head else min(len(data), MAX_HEADER_BYTES + 1)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._broken = True
                raise HttpProtocolError("response head too large")
        out, self._out = self._out, []
        return out

    def feed_eof(self) -> Response | None:
        """The peer closed: a body framed by the connection's end is complete now."""
        if self._in_message and self._head_done and self._until_eof:
            self._in_message = False
            return self._finish(keep_alive=False)
        if self._in_message:
            raise HttpProtocolError("connection closed in the middle of a response")
        return None

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self._in_message = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:  # a trailer
            return
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self._head_done = True
        headers = self._headers
        status = self._parser.get_status_code()
        length = headers.get("content-length")
        if length is not None and int(length) > MAX_BODY_BYTES:
            raise HttpProtocolError("content-length out of range")
        self._until_eof = (
            status >= 200
            and status not in (204, 304)
            and length is None
            and "transfer-encoding" not in headers
        )

    def on_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY_BYTES:
            raise HttpProtocolError("body too large")
        self._body.append(data)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._parser.get_status_code() < 200:
            return  # interim response: the real one follows
        self._out.append(self._finish(self._parser.should_keep_alive()))

    def _finish(self, keep_alive: bool) -> Response:
        status = self._parser.get_status_code()
        body = b"".join(self._body)
        return Response(status, self._headers, body, keep_alive and not self._until_eof)
