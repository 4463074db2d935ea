"""What the framer and its compiled twin share: the connection's framing states, the methods and
versions they name without a lookup, and the helpers both call (one home, so that neither imports
the other)."""

from __future__ import annotations

from typing import Final

IDLE: Final = 0  # between requests: nothing of the next one has arrived
HEAD: Final = 1  # part of a head (or stray bytes) has arrived
BODY: Final = 2  # the head is complete, the body is not
DONE: Final = 3  # nothing more is framed on this connection

VERSIONS: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
METHODS: Final = {m: m.decode() for m in (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE")}
CRLF: Final = b"\r\n"


def header_map(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Headers by lower-case name, values stripped, a repeated header's values joined."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        key = name.lower()
        if key in headers:
            headers[key] += b", " + value.strip(b" \t")
        else:
            headers[key] = value.strip(b" \t")
    return headers


def refusal_reason(exc: Exception) -> str:
    """The reason a 400 gives for a parse error: the error's text when it is short ASCII."""
    text = str(exc) or type(exc).__name__
    return text if text.isascii() and len(text) < 120 else "malformed request"
