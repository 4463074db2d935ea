"""The HTTP/1.1 server core: llhttp (through ``httptools``) for parsing, an I/O-free framer on
top (``framing``), an asyncio protocol over the loop's transports (``server``), routes by path
and a Tornado Application for the rest.

The bidder's bid path runs on it, and the tracker's notice paths."""

from fleet.http.errors import HttpError
from fleet.http.framing import Framer, Request
from fleet.http.limits import HttpLimits
from fleet.http.metrics import HttpMetrics
from fleet.http.server import Handler, HttpServer, Result
from fleet.http.wire import Response, accepts_gzip, error_response, response_bytes

__all__ = [
    "Framer",
    "Handler",
    "HttpError",
    "HttpLimits",
    "HttpMetrics",
    "HttpServer",
    "Request",
    "Response",
    "Result",
    "accepts_gzip",
    "error_response",
    "response_bytes",
]
