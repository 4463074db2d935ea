"""BidEndpoint: from a framed request to the bytes written, with a scripted engine and clock."""

from __future__ import annotations

import gzip
import json

import httptools
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bidder.endpoint import BidEndpoint, EndpointSettings, gunzip, openrtb_version
from bidder.metrics import BidderMetrics
from bidder.openrtb import Nbr
from bidder.options import TmaxBounds
from bidder.outcome import Answer, BidSummary
from bidder.shedding import LoadShedder, SheddingPolicy
from fleet.events import AnyEvent, AuctionEvent, BidEvent
from fleet.http import Framer, HttpLimits, Request

ARRIVAL = 1000.0
BOUNDS = TmaxBounds()  # 100 ms by default, a 15 ms allowance
BODY = json.dumps({"id": "r1", "tmax": 100, "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Engine:
    """Answers what the test scripts; records what it was given; may advance the clock."""

    def __init__(self, clock: Clock, answer: Answer, spend: float = 0.0) -> None:
        self.clock = clock
        self.answer = answer
        self.spend = spend
        self.bodies: list[bytes] = []
        self.ready = True
        self.fail = False

    def handle(self, body: bytes, **_context: object) -> Answer:
        self.bodies.append(body)
        self.clock.now += self.spend
        if self.fail:
            raise RuntimeError("boom")
        return self.answer


def bid_answer() -> Answer:
    events: list[AnyEvent] = [
        AuctionEvent(txid="r1:1:b", ts=1.0, bidder_id="b", exchange="", imps=1, outcome="bid"),
        BidEvent(
            txid="r1:1:b",
            ts=1.0,
            imp_id="1",
            campaign_id=7,
            creative_id=70,
            bid_cpm_micros=2_000_000,
            floor_cpm_micros=0,
            value_cpm_micros=2_500_000,
            p_click=0.01,
            p_install=0.0,
            auction_type=2,
        ),
    ]
    return Answer(
        status=200,
        body=b'{"id":"r1","seatbid":[]}',
        outcome="bid",
        nbr=None,
        reason="bid",
        candidates=3,
        bids=[BidSummary(campaign_id=7, creative_id=70, price_cpm_micros=2_000_000)],
        events=events,
        deadline=BOUNDS.deadline(ARRIVAL, 100),
        expires=BOUNDS.expires(ARRIVAL, 100),
        opportunities=[np.array([7, 8, 9], dtype=np.int64)],
    )


def no_bid(outcome: str = "nobid", reason: str = "no_candidates", tmax: int = 100) -> Answer:
    """A no-bid with the deadlines the pipeline gives a request of this ``tmax``."""
    nbr = Nbr.INSUFFICIENT_TIME if reason == "deadline" else Nbr.UNKNOWN
    return Answer(
        status=204,
        body=b"",
        outcome=outcome,
        nbr=nbr,
        reason=reason,
        deadline=BOUNDS.deadline(ARRIVAL, tmax),
        expires=BOUNDS.expires(ARRIVAL, tmax),
    )


Setup = tuple[BidEndpoint, Engine, Clock, list[bytes], list[Answer], CollectorRegistry]


@pytest.fixture
def setup() -> Setup:
    clock = Clock()
    engine = Engine(clock, bid_answer())
    registry = CollectorRegistry()
    published: list[Answer] = []
    shedder = LoadShedder(SheddingPolicy(max_in_flight=10))
    endpoint = BidEndpoint(
        engine,
        shedder,
        BidderMetrics(registry),
        settings=EndpointSettings(http=HttpLimits(max_body_bytes=4096)),
        publish=published.append,
        ready=lambda: engine.ready,
        clock=clock,
        wallclock=lambda: 1.7e9,
    )
    return endpoint, engine, clock, [], published, registry


def request(*headers: str, length: int = len(BODY)) -> Request:
    """A request framed by the HTTP core (its body is passed to the endpoint separately)."""
    lines = ["POST /openrtb2/bid HTTP/1.1", f"Content-Length: {length}", *headers]
    framer = Framer(HttpLimits())
    framer.feed("\r\n".join(lines).encode() + b"\r\n\r\n" + b"x" * length, 0.0)
    assert framer.error is None, framer.error
    return framer.requests.popleft()


def serve(s: Setup, head: Request, body: bytes, shed: str | None = None) -> bool:
    endpoint, _, clock, written, _, _ = s
    return endpoint.serve(head, body, arrival=clock.now, shed=shed, remote_ip="10.0.0.1",
                          close=False, write=written.append)  # fmt: skip


class _Answer:
    """One whole answer as llhttp reads it."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


def split(data: bytes) -> tuple[int, dict[str, str], bytes]:
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    parser.feed_data(data)
    assert answer.complete, data
    return parser.get_status_code(), answer.headers, answer.body


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_bid_is_written_recorded_and_published(setup: Setup) -> None:
    _, engine, _, written, published, registry = setup
    assert serve(setup, request("x-openrtb-version: 2.5"), BODY.encode()) is False
    status, headers, body = split(written[0])
    assert status == 200 and body == engine.answer.body
    assert headers["x-openrtb-version"] == "2.5"
    assert "content-encoding" not in headers
    assert count(registry, "bidder_requests_total", outcome="bid", reason="bid") == 1
    assert count(registry, "bidder_bids_total", campaign="other") == 1
    assert [type(e) for e in published[0].events] == [AuctionEvent, BidEvent]


def test_gzip_in_and_out(setup: Setup) -> None:
    _, engine, _, written, _, _ = setup
    packed = gzip.compress(BODY.encode())
    serve(setup, request("Content-Encoding: gzip", "Accept-Encoding: gzip", length=len(packed)),
          packed)  # fmt: skip
    assert engine.bodies == [BODY.encode()]
    _, headers, body = split(written[0])
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == engine.answer.body


@pytest.mark.parametrize(
    ("body", "encoding", "status", "reason"),
    [
        (b"\x1f\x8bnot gzip", "gzip", 400, "bad_gzip"),
        (gzip.compress(BODY.encode())[:-6], "gzip", 400, "bad_gzip"),
        (gzip.compress(b" " * 5000), "gzip", 413, "too_large"),
        (BODY.encode(), "br", 415, "encoding"),
    ],
)
def test_bodies_refused_with_a_json_reason(
    setup: Setup, body: bytes, encoding: str, status: int, reason: str
) -> None:
    _, engine, _, written, _, registry = setup
    serve(setup, request(f"Content-Encoding: {encoding}", length=len(body)), body)
    got, headers, payload = split(written[0])
    assert got == status
    assert "error" in json.loads(payload)
    assert headers["x-openrtb-version"] == "2.6"
    assert engine.bodies == []
    assert count(registry, "bidder_requests_total", outcome="invalid", reason=reason) == 1


def test_shed_requests_get_an_immediate_no_bid(setup: Setup) -> None:
    _, engine, _, written, published, registry = setup
    serve(setup, request(), BODY.encode(), shed="lag")
    assert split(written[0])[0] == 204
    assert engine.bodies == [] and published == []
    assert count(registry, "bidder_shed_total", reason="lag") == 1
    assert count(registry, "bidder_requests_total", outcome="shed", reason="lag") == 1


def test_not_ready_is_a_no_bid(setup: Setup) -> None:
    _, engine, _, written, _, registry = setup
    engine.ready = False
    serve(setup, request(), BODY.encode())
    assert split(written[0])[0] == 204 and engine.bodies == []
    assert count(registry, "bidder_requests_total", outcome="nobid", reason="not_ready") == 1


def test_an_internal_error_is_a_counted_no_bid_never_a_500(setup: Setup) -> None:
    _, engine, _, written, _, registry = setup
    engine.fail = True
    assert serve(setup, request(), BODY.encode()) is False
    assert len(written) == 1 and split(written[0])[0] == 204
    assert count(registry, "bidder_errors_total", where="endpoint") == 1


def test_a_bid_ready_after_the_deadline_becomes_a_no_bid(setup: Setup) -> None:
    _, engine, _, written, published, registry = setup
    engine.spend = 0.090  # tmax 100 ms, allowance 15 ms: past the deadline, before tmax
    assert serve(setup, request(), BODY.encode()) is False
    assert split(written[0])[0] == 204
    assert count(registry, "bidder_requests_total", outcome="late", reason="deadline") == 1
    assert count(registry, "bidder_bids_total", campaign="other") == 0
    (answer,) = published
    events = answer.events
    assert [type(e) for e in events] == [AuctionEvent]  # the bid was never sent
    assert isinstance(events[0], AuctionEvent) and events[0].outcome == "late"
    assert events[0].nbr == Nbr.INSUFFICIENT_TIME == 15  # not 9, the daily user cap
    # the campaigns were eligible all the same: the pacing link still counts them
    assert [a.tolist() for a in answer.opportunities] == [[7, 8, 9]]


def test_nothing_at_all_is_sent_after_tmax(setup: Setup) -> None:
    _, engine, _, written, _, registry = setup
    engine.answer = no_bid("late", "deadline")
    engine.spend = 0.101
    assert serve(setup, request(), BODY.encode()) is True  # close the connection unanswered
    assert written == []
    assert count(registry, "bidder_errors_total", where="late_dropped") == 1


def test_a_late_no_bid_still_before_tmax_is_answered(setup: Setup) -> None:
    _, engine, _, written, _, _ = setup
    engine.answer = no_bid("late", "deadline", tmax=5)
    engine.spend = 0.004
    body = BODY.replace('"tmax": 100', '"tmax": 5').encode()
    assert serve(setup, request(length=len(body)), body) is False
    assert split(written[0])[0] == 204


def test_the_endpoint_keeps_the_answers_deadlines_not_its_own(setup: Setup) -> None:
    """The body says tmax 100, the answer (the pipeline, capping "5000") says 250 ms: the
    answer's deadlines are the ones kept."""
    _, engine, _, written, _, _ = setup
    engine.answer = bid_answer()
    engine.answer.deadline = BOUNDS.deadline(ARRIVAL, 5000)
    engine.answer.expires = BOUNDS.expires(ARRIVAL, 5000)
    engine.spend = 0.200  # past the body's tmax, before the answer's deadline (235 ms)
    assert serve(setup, request(), BODY.encode()) is False
    assert split(written[0])[0] == 200
    engine.spend = 0.300  # past the 250 ms cap: nothing at all
    written.clear()
    assert serve(setup, request(), BODY.encode()) is True
    assert written == []


def test_gunzip_accepts_several_members_and_refuses_garbage() -> None:
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    with pytest.raises(Exception):  # noqa: B017 - zlib.error or EOFError, both mean 400
        gunzip(gzip.compress(b"ab") + b"trailing", 10)


@pytest.mark.parametrize(
    ("value", "echoed"), [("2.5", "2.5"), (" 2.6 ", "2.6"), ("<script>", "2.6"), ("", "2.6")]
)
def test_openrtb_version_echo_is_sanitised(value: str, echoed: str) -> None:
    head = request(f"x-openrtb-version: {value}") if value else request()
    assert openrtb_version(head) == echoed
