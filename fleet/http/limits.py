"""What one HTTP/1.1 connection may cost the server: the limits an operator sees and sets.

Declared once here and read everywhere else (the framing, the server, the bid endpoint's gunzip
limit). Each is an ``RTBFLEET_HTTP_*`` variable; every service serving HTTP loads the same
object (``load(HttpLimits)``) and may replace a field for its own traffic.

What an attacker gets at each limit is in the README ("Hostile traffic"): a status code
(431, 413, 408) and a closed connection, or a connection closed at accept, and a metric
(``fleet_http_refused_total``, ``fleet_http_timeouts_total``,
``fleet_http_connections_rejected_total``, ``fleet_http_closed_total``).
"""

from __future__ import annotations

import dataclasses

from fleet.errors import SettingsError
from fleet.settings import non_negative, positive, setting

FD_RESERVE = 64  # descriptors kept for everything but client connections (files, pools, buses)
# After a refusal, what the peer still sends (the rest of an oversized body, say) is read and
# dropped, unparsed, for this long and this much at most, so that a client that writes its whole
# request before reading gets the answer instead of a reset. Cheap: no framing, large reads.
LINGER_S = 2.0
LINGER_BYTES = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = setting(
        16 * 1024,
        "RTBFLEET_HTTP_MAX_HEADER_BYTES",
        "largest request head (request line and headers; larger: 431 and close)",
        positive,
    )
    max_body_bytes: int = setting(
        256 * 1024,
        "RTBFLEET_HTTP_MAX_BODY_BYTES",
        "largest request body, as declared, as decoded and after gunzip (larger: 413 and close)",
        positive,
    )
    max_chunks: int = setting(
        1024,
        "RTBFLEET_HTTP_MAX_CHUNKS",
        "most chunks in one chunked request body (more: 413 and close)",
        positive,
    )
    header_timeout_s: float = setting(
        2.0,
        "RTBFLEET_HTTP_HEADER_TIMEOUT",
        "seconds from a head's first byte (stray CRLFs too) to its end (later: 408 and close)",
        positive,
    )
    body_timeout_s: float = setting(
        5.0,
        "RTBFLEET_HTTP_BODY_TIMEOUT",
        "seconds from a head's end to its body's end (later: 408 and close)",
        positive,
    )
    idle_timeout_s: float = setting(
        15.0,
        "RTBFLEET_HTTP_IDLE_TIMEOUT",
        "seconds a keep-alive connection may wait for its next request (then closed)",
        positive,
    )
    max_connections: int = setting(
        0,
        "RTBFLEET_HTTP_MAX_CONNECTIONS",
        "open client connections per process at most (0: the file-descriptor limit less 64)",
        non_negative,
    )
    max_requests_per_connection: int = setting(
        10_000,
        "RTBFLEET_HTTP_MAX_REQUESTS_PER_CONNECTION",
        "requests answered on one connection, the last with Connection: close (0: no limit)",
        non_negative,
    )

    @property
    def max_message_bytes(self) -> int:
        """A request's bytes on the wire at most: head and body with all chunk framing (sizes,
        extensions, CRLFs) and trailers."""
        return self.max_header_bytes + self.max_body_bytes + 64 * self.max_chunks

    def connection_cap(self, fd_limit: int) -> int:
        """Open connections allowed with ``fd_limit`` descriptors (RLIMIT_NOFILE's soft limit):
        the configured cap, which must stay below the limit, or the limit less a reserve."""
        room = fd_limit - FD_RESERVE
        if room < 1:
            raise SettingsError(
                "RTBFLEET_HTTP_MAX_CONNECTIONS",
                f"the file-descriptor limit ({fd_limit}) leaves no room for connections",
            )
        if not self.max_connections:
            return room
        if self.max_connections > room:
            raise SettingsError(
                "RTBFLEET_HTTP_MAX_CONNECTIONS",
                f"{self.max_connections} is above the file-descriptor limit ({fd_limit}) less "
                f"{FD_RESERVE}: raise the limit (ulimit -n) or lower the cap",
            )
        return self.max_connections
