"""HTTP/1.1 for the exchange's client side, with no I/O: request bytes out, response events in.

``ResponseParser.feed(data)`` returns the responses completed by ``data`` (several when a peer
sends them back to back). Bodies are framed by Content-Length, chunked transfer coding or, for a
response without either, the end of the connection (``feed_eof``). 1xx responses are skipped;
204 and 304 have no body. Invariants: the buffer never holds more than one response's unread
bytes past the limits below; a violation raises HttpProtocolError and the connection is dropped.
"""

from __future__ import annotations

import dataclasses
import zlib

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
        self._buf = bytearray()
        self._head: tuple[int, dict[str, str], bool] | None = None
        self._length: int | None = None  # bytes of body still expected (Content-Length)
        self._chunked = False
        self._until_eof = False
        self._body = bytearray()

    @property
    def idle(self) -> bool:
        """No response has begun (a clean point to close the connection)."""
        return self._head is None and not self._buf

    def feed(self, data: bytes) -> list[Response]:
        self._buf += data
        out: list[Response] = []
        while True:
            if self._head is None:
                if not self._parse_head():
                    return out
                if self._head is None:  # an interim (1xx) response was skipped
                    continue
            response = self._parse_body()
            if response is None:
                return out
            out.append(response)

    def feed_eof(self) -> Response | None:
        """The peer closed: a body framed by the connection's end is complete now."""
        if self._head is not None and self._until_eof:
            self._body += self._buf
            self._buf.clear()
            return self._finish()
        if self._head is not None or self._buf:
            raise HttpProtocolError("connection closed in the middle of a response")
        return None

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                raise HttpProtocolError("response head too large")
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpProtocolError(f"bad header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            parts[0] == "HTTP/1.1" or "keep-alive" in connection
        )
        self._head = (status, headers, keep_alive)
        self._body.clear()
        self._chunked = self._until_eof = False
        self._length = None
        if 100 <= status < 200:
            self._head = None  # interim response: the real one follows
            return True
        if status in (204, 304):
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise HttpProtocolError("bad content-length") from None
            if not 0 <= self._length <= MAX_BODY_BYTES:
                raise HttpProtocolError("content-length out of range")
        else:
            self._until_eof = True
        return True

    def _parse_body(self) -> Response | None:
        if self._head is None:
            return None
        if self._until_eof:
            self._body += self._buf
            self._buf.clear()
            if len(self._body) > MAX_BODY_BYTES:
                raise HttpProtocolError("body too large")
            return None
        if self._chunked:
            return self._parse_chunks()
        assert self._length is not None
        if len(self._buf) < self._length:
            return None
        self._body += self._buf[: self._length]
        del self._buf[: self._length]
        return self._finish()

    def _parse_chunks(self) -> Response | None:
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return None
            size_text = bytes(self._buf[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError("bad chunk size") from None
            if size == 0:
                rest = line_end + 2  # optional trailer lines, then an empty line
                if len(self._buf) < rest + 2:
                    return None
                if bytes(self._buf[rest : rest + 2]) == b"\r\n":
                    del self._buf[: rest + 2]
                    return self._finish()
                trailer_end = self._buf.find(b"\r\n\r\n", rest)
                if trailer_end < 0:
                    return None
                del self._buf[: trailer_end + 4]
                return self._finish()
            if len(self._buf) < line_end + 2 + size + 2:
                return None
            start = line_end + 2
            self._body += self._buf[start : start + size]
            if len(self._body) > MAX_BODY_BYTES:
                raise HttpProtocolError("body too large")
            del self._buf[: start + size + 2]

    def _finish(self) -> Response:
        assert self._head is not None
        status, headers, keep_alive = self._head
        self._head = None
        return Response(status, headers, bytes(self._body), keep_alive and not self._until_eof)
