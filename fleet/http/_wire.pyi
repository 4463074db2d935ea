from collections.abc import Sequence

class Response:
    status: int
    body: bytes
    headers: Sequence[tuple[str, str]]
    content_type: bytes
    close: bool
    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        content_type: bytes = b"application/json",
        close: bool = False,
    ) -> None: ...
    def to_bytes(
        self, *, close: bool, keep_alive_10: bool = False, head: bool = False
    ) -> bytes: ...
