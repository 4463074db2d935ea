"""The compiled response (fleet/http/_wire.pyx) builds the usual answer's bytes in C: they must
be the reference's (``wire.PyResponse``) for every status, body, content type, close, HTTP/1.0
keep-alive and HEAD, extra headers or not; and the connection must write exactly those bytes,
or a subclass's own."""

from __future__ import annotations

import itertools

import pytest

from fleet.http import Response
from fleet.http import wire as wire_module
from fleet.http.wire import PyResponse

compiled = pytest.importorskip("fleet.http._wire", reason="the extension is not built")
connection = pytest.importorskip("fleet.http._connection", reason="the extension is not built")

STATUSES = (200, 201, 202, 204, 206, 299, 302, 304, 400, 404, 413, 500, 503, 299)
BODIES = (b"", b"0", b"{}", b'{"id":"1","seatbid":[]}', b"x" * 9, b"y" * 10, b"z" * 123_457)
TYPES = (b"application/json", b"image/gif", b"text/plain; charset=utf-8")
EXTRA = ((), (("X-A", "b"),), [("Location", "https://example.com/"), ("Cache-Control", "x")])


def test_the_compiled_response_is_the_one_in_use() -> None:
    assert wire_module.Response is compiled.Response is Response


@pytest.mark.parametrize("status", STATUSES)
def test_every_answer_is_the_reference_bytes(status: int) -> None:
    for body, content_type, close, keep_alive_10, head, own_close, extra in itertools.product(
        BODIES, TYPES, (False, True), (False, True), (False, True), (False, True), EXTRA
    ):
        fields = (status, body, extra, content_type, own_close)
        ours, reference = Response(*fields), PyResponse(*fields)
        expected = reference.to_bytes(close=close, keep_alive_10=keep_alive_10, head=head)
        case = (status, body[:20], content_type, close, own_close, keep_alive_10, head, extra)
        assert ours.to_bytes(close=close, keep_alive_10=keep_alive_10, head=head) == expected, case
        # what the connection writes: the request's close or the answer's
        written = connection.answer_bytes(ours, close or own_close, keep_alive_10, head)
        assert written == expected, case


def test_fields_equality_and_keywords_as_the_reference() -> None:
    a = Response(302, headers=(("Location", "/x"),), close=True)
    assert (a.status, a.body, a.headers, a.content_type, a.close) == (
        302,
        b"",
        (("Location", "/x"),),
        b"application/json",
        True,
    )
    assert a == Response(302, b"", (("Location", "/x"),), b"application/json", True)
    assert a != Response(302, headers=(("Location", "/y"),), close=True)
    reference = PyResponse(302, headers=(("Location", "/x"),), close=True)
    assert repr(a) == repr(reference).removeprefix("Py")
    a.status = 200
    assert a.status == 200


def test_a_subclass_goes_through_its_own_to_bytes() -> None:
    class Tagged(Response):
        def to_bytes(
            self, *, close: bool, keep_alive_10: bool = False, head: bool = False
        ) -> bytes:
            return b"tagged"

    assert connection.answer_bytes(Tagged(200, b"{}"), False) == b"tagged"
