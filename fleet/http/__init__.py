"""The HTTP/1.1 server core: llhttp (through ``httptools``) for parsing, an I/O-free framer on
top (``framing``), an asyncio protocol over the loop's transports (``server``), routes by path
and a Tornado Application for the rest.

The bidder's bid path runs on it, and the tracker's notice paths. The server and its metrics
are imported on first use: settings import ``HttpLimits`` before a forking supervisor may
import prometheus_client (its multiprocess mode must be set up first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleet.http.errors import HttpError
from fleet.http.framing import Framer, Request
from fleet.http.limits import HttpLimits
from fleet.http.wire import Response, accepts_gzip, error_response, response_bytes

if TYPE_CHECKING:
    from fleet.http.metrics import HttpMetrics
    from fleet.http.server import Handler, HttpServer, Result

_LAZY = {
    "HttpMetrics": "fleet.http.metrics",
    "HttpServer": "fleet.http.server",
    "Handler": "fleet.http.server",
    "Result": "fleet.http.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet.http' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
