"""HTTP/1.1 request framing with no I/O: bytes in, complete requests out (h11's shape).

llhttp (through ``httptools``) does the parsing: request line, header syntax, Content-Length,
chunk sizes, trailers, keep-alive, in its strict mode (no bare LF, no obs-fold, no lax chunk
sizes, no Content-Length with Transfer-Encoding, no duplicate Content-Length, no control bytes).
``Framer`` adds what a server must decide on top and llhttp leaves to it:

- HTTP/1.0 and HTTP/1.1 only (505); ``Transfer-Encoding: chunked`` exactly and only on HTTP/1.1
  (501 / 400); at most one Host header;
- limits counted as the bytes arrive (``HttpLimits``): the head, the body as declared, as
  decoded and on the wire (chunk sizes, extensions, CRLFs and trailers included), chunks per
  request; a violation is an error at once, never a body read to its end;
- at most one stray CRLF between requests;
- an upgrade (``Upgrade`` with ``Connection: upgrade``) is not taken: a request without a body
  is answered as if it had not asked, with ``Connection: close``; with a body, or a CONNECT,
  it is refused;
- trailers are read and dropped, never merged into the headers.

Invariants:
- ``requests`` holds complete requests in arrival order; each was framed exactly as llhttp
  framed it, so answering them in order is safe.
- Once ``error`` is set, or a request that ends the connection is complete, nothing more is
  parsed (``phase`` is DONE): what follows cannot be framed with confidence.
- Stray CR/LF bytes are counted where they can be seen: at the start of a read, and at the
  end of a read after the last request it completes. A run of them between two requests of
  the same read is skipped by llhttp unseen (harmless to the framing, and bounded by the read).
- The wire count of a request in progress is exact, except that a read which completes one
  request and starts the next counts the previous one's framing bytes for the next one too
  (at most a head's and some chunk lines' worth: ``HttpLimits.max_message_bytes`` has room).

Time is passed in (``now``): the framer stamps each request with when its first byte came.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import httptools

from fleet.http.errors import HttpError
from fleet.http.frames import BODY as BODY
from fleet.http.frames import CRLF, METHODS, VERSIONS, header_map, refusal_reason
from fleet.http.frames import DONE as DONE
from fleet.http.frames import HEAD as HEAD
from fleet.http.frames import IDLE as IDLE
from fleet.http.limits import HttpLimits

# The headers the framing itself reads; every other header is only kept (``Request.headers``).
_WATCHED: Final = frozenset((b"host", b"transfer-encoding", b"content-length", b"expect"))
_WATCHED_LENGTHS: Final = frozenset(len(name) for name in _WATCHED)
_NONE: Final[dict[bytes, bytes]] = {}


class PyRequest:
    """One complete request. ``raw_headers`` keeps the headers as received, in order;
    ``headers`` maps lower-case names to values (stripped; a repeated header's values joined
    with ", "), built from them on first use (most answers never need it).
    ``received_at`` is when its first byte was read; ``close`` says whether its answer ends the
    connection (set by the server, which knows about draining and the request cap too).

    The reference: ``Request`` is its compiled twin (fleet/http/_framing.pyx) where built."""

    __slots__ = (
        "_headers",
        "body",
        "chunked",
        "close",
        "keep_alive",
        "method",
        "raw_headers",
        "received_at",
        "remote_ip",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        received_at: float,
        chunked: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self._headers: dict[bytes, bytes] | None = None
        self.raw_headers = raw_headers
        self.body = body
        self.keep_alive = keep_alive
        self.received_at = received_at
        self.chunked = chunked
        self.close = not keep_alive
        self.remote_ip = ""

    @property
    def headers(self) -> dict[bytes, bytes]:
        headers = self._headers
        if headers is None:
            self._headers = headers = header_map(self.raw_headers)
        return headers

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: bytes, default: str = "") -> str:
        """A header's value as text (``name`` in lower case)."""
        value = self.headers.get(name)
        return default if value is None else value.decode("latin-1")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target[:80]!r} {self.version} {len(self.body)} B>"


class PyFramer:
    """Feed it what a connection receives (``feed``); take ``requests`` in order; when ``error``
    is set, answer it after them and close.

    The reference: ``Framer`` is its compiled twin (fleet/http/_framing.pyx), the same code as
    an extension type, and this class where the extension is not built."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.requests: deque[Request] = deque()
        self.error: HttpError | None = None
        self.phase = IDLE
        self.since = 0.0  # when the current phase began (the ``now`` of that feed)
        self.continue_due = False  # the request being read asked for 100 Continue
        self.upgrade_refused = False  # the last request asked for an upgrade (not taken)
        self._parser = self._make_parser()
        self._now = 0.0
        self._stray = 0  # stray CR/LF bytes since the last request
        self._feed_done = 0  # body bytes of requests completed in the current feed
        self._begun = False  # llhttp has seen the start of a request (not only CR/LF)
        self._feed_body = 0  # body bytes of the current request in the current feed
        self._feed_len = 0  # bytes in the current feed
        self._reset_message()

    def _make_parser(self) -> httptools.HttpRequestParser:
        return httptools.HttpRequestParser(self)

    def _reset_message(self) -> None:
        self._url = b""  # the target (llhttp gives it in one piece unless a read splits it)
        self._raw: list[tuple[bytes, bytes]] = []
        self._watched: dict[bytes, bytes] | None = None  # the headers framing reads (_WATCHED)
        self._body = b""  # the body, while it came in one piece
        self._parts: list[bytes] | None = None  # its pieces, once there is more than one
        self._size = 0  # body bytes decoded
        self._chunks = 0
        self._wire = 0  # bytes on the wire so far
        self._chunked = False
        self._version = ""
        self._received_at = 0.0
        self._feed_body = 0
        self._pending: HttpError | None = None

    # -- input ----------------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> None:
        """Frame ``data``. Complete requests go to ``requests``; a violation sets ``error``."""
        if self.phase == DONE or not data:
            return
        self._now = now
        self._feed_len = n = len(data)
        if self.phase == IDLE:
            self.since = now
        if not self._begun and data[0] in (13, 10):  # CR or LF where a request line starts
            lead = n - len(data.lstrip(b"\r\n"))
            self._stray += lead
            if self._stray > 2 or not CRLF.startswith(data[:lead]):
                self._fail(HttpError(400, "stray bytes between requests"))
                return
            self.phase = HEAD  # the header timer runs from the first byte, a CRLF too
        done_before = len(self.requests)
        self._feed_done = self._feed_body = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
            return
        except httptools.HttpParserError as exc:
            if self.phase == DONE:  # bytes after a request that closes: never read
                return
            self._fail(self._pending or HttpError(400, refusal_reason(exc)))
            return
        if self.phase == DONE:
            return
        if self.phase == IDLE:
            if len(self.requests) > done_before:
                self._stray_tail(data)
            return
        # a request in progress: its bytes on the wire (all of this read, less the bodies of
        # the requests it completed)
        self._wire += n - self._feed_done
        limits = self.limits
        if self.phase == HEAD and self._wire > limits.max_header_bytes:
            self._fail(HttpError(431, "request head too large", "head_too_large"))
        elif self._wire > limits.max_message_bytes:
            self._fail(HttpError(413, "request body too large", "body_too_large"))

    def _stray_tail(self, data: bytes) -> None:
        """CR/LF after the last request completed in this read: one CRLF at most."""
        if data[-1] not in (10, 13):
            return
        last = self.requests[-1]
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
                self.phase, self.since = HEAD, self._now

    def _fail(self, error: HttpError) -> None:
        self.error = error
        self.phase = DONE
        self.continue_due = False

    def _upgraded(self) -> None:
        """llhttp stopped after a request asking to switch protocols: answer it, then close."""
        if self._pending is not None:
            self._fail(self._pending)
            return
        self.phase = DONE
        self.upgrade_refused = True
        if self.requests:
            self.requests[-1].keep_alive = False
            self.requests[-1].close = True

    # -- llhttp's callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()
        self._begun = True
        if self.phase == IDLE:
            self.since = self._now
        self._received_at = self.since
        self.phase = HEAD

    def on_url(self, url: bytes) -> None:
        self._url += url  # b"" + url is url itself: no copy for the usual one piece

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.phase == BODY:  # a trailer: counted on the wire, never used
            return
        self._raw.append((name, value))
        if len(name) in _WATCHED_LENGTHS:  # a cheap first test; most headers stop here
            key = name.lower()
            if key in _WATCHED:
                self._watch(key, value)

    def _watch(self, key: bytes, value: bytes) -> None:
        """A header the framing reads, kept as ``Request.headers`` would show it."""
        headers = self._watched
        if headers is None:
            self._watched = headers = {}
        if key in headers:
            if key == b"host":
                self._refuse(HttpError(400, "more than one Host header"))
            headers[key] += b", " + value.strip(b" \t")
        else:
            headers[key] = value.strip(b" \t")

    def on_headers_complete(self) -> None:
        parser, headers = self._parser, self._watched or _NONE
        limit = self.limits.max_header_bytes
        if self._wire + self._feed_len > limit and self._head_size() > limit:
            self._refuse(HttpError(431, "request head too large", "head_too_large"))
        self._version = version = VERSIONS.get(parser.get_http_version(), "")
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
        if length is not None and int(length) > self.limits.max_body_bytes:
            self._refuse(HttpError(413, "request body too large", "body_too_large"))
        if parser.should_upgrade():
            if parser.get_method() == b"CONNECT":
                self._refuse(HttpError(405, "CONNECT is not served"))
            if te is not None or (length is not None and length != b"0"):
                self._refuse(HttpError(400, "an upgrade with a body is not served"))
        self.phase, self.since = BODY, self._now
        expect = headers.get(b"expect")
        self.continue_due = expect is not None and expect.lower() == b"100-continue"

    def on_body(self, data: bytes) -> None:
        n = len(data)
        self._size += n
        self._feed_body += n
        if self._size > self.limits.max_body_bytes:
            self._refuse(HttpError(413, "request body too large", "body_too_large"))
        if self._parts is not None:
            self._parts.append(data)
        elif self._body:
            self._parts = [self._body, data]
        else:
            self._body = data

    def on_chunk_header(self) -> None:
        self._chunks += 1
        if self._chunks > self.limits.max_chunks:
            self._refuse(HttpError(413, "too many chunks", "too_many_chunks"))

    def on_message_complete(self) -> None:
        parser = self._parser
        method_b = parser.get_method()
        method = METHODS.get(method_b) or method_b.decode("ascii")
        parts = self._parts
        body = self._body if parts is None else b"".join(parts)
        keep_alive = parser.should_keep_alive()
        request = Request(
            method,
            self._url.decode("latin-1"),
            self._version,
            self._raw,
            body,
            keep_alive,
            self._received_at,
            self._chunked,
        )
        self.requests.append(request)
        self._begun = False
        self._feed_done += self._feed_body
        self._stray = 0
        self.continue_due = False
        if keep_alive:
            self.phase, self.since = IDLE, self._now
        else:
            self.phase = DONE

    def _head_size(self) -> int:
        """The head's bytes as llhttp showed them (the request line's spaces and version, and
        each line's colon and CRLF, counted as 16 and 4): for a head that came in one read."""
        size = 16 + len(self._url)
        for name, value in self._raw:
            size += len(name) + len(value) + 4
        return size

    def _refuse(self, error: HttpError) -> None:
        """From a callback: stop llhttp here (the exception makes it return an error)."""
        self._pending = error
        raise error


try:
    from fleet.http._framing import Framer as Framer
    from fleet.http._framing import Request as Request
except ImportError:  # the extension is not built: the reference, a few microseconds slower
    Framer = PyFramer  # type: ignore[misc,assignment]
    Request = PyRequest  # type: ignore[misc,assignment]
