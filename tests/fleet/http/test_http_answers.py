"""The compiled connection builds the usual answer's bytes itself (fleet/http/_connection.pyx):
they must be ``Response.to_bytes``' bytes, for every status, body, content type, close,
HTTP/1.0 keep-alive and HEAD, and any other answer must go through ``to_bytes``."""

from __future__ import annotations

import itertools

import pytest

from fleet.http import Response

compiled = pytest.importorskip("fleet.http._connection", reason="the extension is not built")

STATUSES = (200, 201, 202, 204, 206, 299, 302, 304, 400, 404, 413, 500, 503)
BODIES = (b"", b"0", b"{}", b'{"id":"1","seatbid":[]}', b"x" * 9, b"y" * 10, b"z" * 123_457)
TYPES = (b"application/json", b"image/gif", b"text/plain; charset=utf-8")


@pytest.mark.parametrize("status", STATUSES)
def test_every_answer_is_the_reference_bytes(status: int) -> None:
    for body, content_type, close, keep_alive_10, head, own_close, extra in itertools.product(
        BODIES,
        TYPES,
        (False, True),
        (False, True),
        (False, True),
        (False, True),
        ((), (("X-A", "b"),)),
    ):
        response = Response(status, body, headers=extra, content_type=content_type, close=own_close)
        closing = close or own_close  # what the connection passes: the request's or the answer's
        expected = response.to_bytes(close=closing, keep_alive_10=keep_alive_10, head=head)
        got = compiled.answer_bytes(response, closing, keep_alive_10, head)
        assert got == expected, (status, body[:20], content_type, closing, keep_alive_10, head)


def test_a_subclass_of_response_goes_through_its_own_to_bytes() -> None:
    class Tagged(Response):
        def to_bytes(
            self, *, close: bool, keep_alive_10: bool = False, head: bool = False
        ) -> bytes:
            return b"tagged"

    assert compiled.answer_bytes(Tagged(200, b"{}"), False) == b"tagged"
