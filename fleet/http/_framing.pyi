from collections import deque

import httptools

from fleet.http.errors import HttpError
from fleet.http.limits import HttpLimits

class Request:
    method: str
    target: str
    version: str
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    received_at: float
    chunked: bool
    close: bool
    remote_ip: str
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
    ) -> None: ...
    @property
    def headers(self) -> dict[bytes, bytes]: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    def header(self, name: bytes, default: str = "") -> str: ...

class Framer:
    limits: HttpLimits
    requests: deque[Request]
    error: HttpError | None
    phase: int
    since: float
    continue_due: bool
    upgrade_refused: bool
    def __init__(self, limits: HttpLimits) -> None: ...
    def _make_parser(self) -> httptools.HttpRequestParser: ...
    def feed(self, data: bytes, now: float) -> None: ...
    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_chunk_header(self) -> None: ...
    def on_message_complete(self) -> None: ...
