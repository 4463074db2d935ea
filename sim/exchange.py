"""The simulated exchange: sends bid requests open-loop, runs each auction, sends the notices,
pixels, clicks and postbacks that follow, and writes everything into a ``Ledger``.

Requests are due by the clock (``traffic.Schedule``), never by answers: a slow bidder gets the
same offered load as a fast one. An answer later than the request's deadline (tmax, or the
exchange default when absent) is late: it takes no part in the auction and its bids get a loss
notice with reason 2. Without an answer by tmax + slack the request times out.

Follow-ups happen on the simulated clock: a delay of ``d`` simulated seconds is ``d /
time_scale`` real seconds. Notices go only to loopback or the hosts of the fleet under test;
whatever nothing answers is counted as unanswered per kind, never retried.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import logging
import random
import time
import zlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from sim import auction
from sim.errors import HttpProtocolError
from sim.http1 import build_request
from sim.httpclient import Client, Pool, Result
from sim.ledger import ERROR, INVALID, LATE, LOST, NO_BID, NOT_SENT, TIMEOUT, WON, Ledger
from sim.market import Market, Slot
from sim.notices import FollowupParams
from sim.notifier import Notifier
from sim.population import SELLERS
from sim.settings import SimSettings
from sim.sizing import personalised
from sim.traffic import Schedule, SimRequest, Traffic

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BEHIND = 0.1  # seconds: a request due longer ago than this is not sent at all
STALL_PROBE = 0.005  # seconds between probes of this process's own event-loop lag
STALL_MIN = 0.003  # a probe later than this: the loop was stalled (CPU starved, GC, ...)
BID_PATH = "/openrtb2/bid"
_NOT_SENT_ERRORS = frozenset(
    {"expired", "queue_full", "refused", "closed", "not_allowed", "behind"}
)


@dataclasses.dataclass(frozen=True)
class Progress:
    elapsed: float  # real seconds since traffic started
    sim_ts: float
    requests: int
    answered: int
    bids: int
    wins: int
    late: int
    timeouts: int
    not_sent: int
    spend_usd_micros: int
    p50_ms: float
    p99_ms: float
    rate: float  # requests per second since the last snapshot


def _int_id(text: str) -> int:
    """Campaign/creative ids are numbers in this fleet; anything else gets a stable negative
    stand-in (-2 when absent; -1 means "no bid" in the ledger)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    return -2 if not text else -(zlib.crc32(text.encode()) + 3)


class Exchange:
    def __init__(
        self,
        *,
        market: Market,
        traffic: Traffic,
        schedule: Schedule,
        settings: SimSettings,
        bid_urls: Sequence[str],
        tracker_url: str = "",
        followups: FollowupParams | None = None,
        rng: random.Random,
        ledger: Ledger | None = None,
    ) -> None:
        if not bid_urls:
            raise ValueError("at least one bid URL is needed")
        self.market = market
        self.traffic = traffic
        self.schedule = schedule
        self.settings = settings
        self.ledger = ledger or Ledger()
        self._targets: list[tuple[str, str]] = []  # (host:port, path)
        hosts = set(LOOPBACK)
        for url in bid_urls:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            path = parts.path if parts.path not in ("", "/") else BID_PATH
            self._targets.append((parts.netloc, path))
            hosts.add(parts.hostname or "")
        if tracker_url:
            hosts.add(urlsplit(tracker_url).hostname or "")
        self._client = Client(
            max_connections=settings.notice_connections, allowed_hosts=frozenset(hosts)
        )
        self.notifier = Notifier(
            client=self._client,
            ledger=self.ledger,
            settings=settings,
            params=followups or FollowupParams(),
            rng=rng,
            tracker_url=tracker_url,
            sim_now=lambda: self._sim_now,
            run_tag=traffic.run_tag,
        )
        self._bid_pools: list[Pool] = []
        self._next_target = itertools.cycle(range(len(bid_urls)))
        self._recent: list[float] = []
        self._last_progress = (0.0, 0)
        self._start = 0.0
        self._sim_start = schedule.sim_start
        self._sim_now = self._sim_start
        self._late = self._timeouts = self._not_sent = 0
        self._stalls: list[tuple[float, float]] = []  # (start, end), perf_counter, in order
        # late answers and timeouts to judge against the stalls once all are known:
        # (request id, rows, sent_at, done_at, allowed seconds; None for a timeout)
        self._suspects: list[tuple[str, int, float, float, float | None]] = []
        self._running = False
        self.offer_seconds = 0.0  # how long offering the traffic took (behind: > duration)

    # -- the clock -----------------------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- running -------------------------------------------------------------------------------

    def set_sim_start(self, sim_start: float) -> None:
        """Begin the simulated clock at ``sim_start`` (before ``run``): to agree with the fleet
        clock when the fleet came up late."""
        if self._running or self._start:
            raise RuntimeError("the exchange is running")
        self.schedule.set_start(sim_start)
        self._sim_start = self._sim_now = sim_start

    async def run(self, stop: asyncio.Event | None = None) -> Ledger:
        """Offer traffic for ``settings.duration`` seconds (or until ``stop``), then drain."""
        loop = self._loop()
        stop = stop or asyncio.Event()
        self._bid_pools = [
            Pool(
                *_host_port(netloc),
                max_connections=self.settings.connections,
                max_queue=max(1000, int(self.settings.rate)),
            )
            for netloc, _ in self._targets
        ]
        self._start = loop.time()
        self._running = True
        probe = loop.create_task(self._probe_stalls())
        try:
            await self._offer(stop)
            self.offer_seconds = loop.time() - self._start
        finally:
            self._running = False
            try:
                await self._drain(stop)
            finally:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
                self._excuse_stalls()
        return self.ledger

    async def _offer(self, stop: asyncio.Event) -> None:
        loop = self._loop()
        duration = self.settings.duration
        due, sim_ts = self.schedule.next()
        expire_tick = 0.0
        while due <= duration and not stop.is_set():
            now = loop.time() - self._start
            if due > now:
                await asyncio.sleep(min(due - now, 0.05))
                continue
            burst = 0
            while due <= now and due <= duration:
                request = self.traffic.request(sim_ts)
                if now - due > MAX_BEHIND:
                    self._behind(request)  # no catch-up bursts: the moment has passed
                else:
                    self._send(request, now - due)
                due, sim_ts = self.schedule.next()
                burst += 1
                if burst >= 256:  # let answers in even when far behind
                    break
            if now - expire_tick > 0.01:
                expire_tick = now
                for pool in self._bid_pools:
                    pool.expire_queue()
            await asyncio.sleep(0)

    async def _drain(self, stop: asyncio.Event) -> None:
        """Wait for answers in flight, then for follow-ups due within ``settings.drain``."""
        loop = self._loop()
        longest = max(max(s.tmax_choices) for s in SELLERS)
        wait = (max(longest, self.settings.default_tmax_ms) + self.settings.tmax_slack_ms) / 1000
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait + 0.2):
                for pool in self._bid_pools:
                    await pool.wait_idle()
        end = loop.time() + (0.0 if stop.is_set() else self.settings.drain)
        while loop.time() < end:
            if not self.notifier.busy_before(end):
                break
            await asyncio.sleep(0.02)
        self.notifier.cancel_pending()
        for pool in self._bid_pools:
            await pool.close()
        await self._client.close()

    # -- bid requests --------------------------------------------------------------------------

    async def _probe_stalls(self) -> None:
        """Record when this process's own loop was stalled: answers that arrived meanwhile
        were read late through no fault of the bidder."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(STALL_PROBE)
            after = time.perf_counter()
            if after - before - STALL_PROBE > STALL_MIN:
                self._stalls.append((before + STALL_PROBE, after))
                self.ledger.stall_seconds += after - before - STALL_PROBE

    def _stalled(self, start: float, end: float, ends: list[float]) -> float:
        """Seconds of recorded loop stalls within [start, end] (perf_counter); ``ends`` are
        the stalls' ends, in order."""
        total = 0.0
        for a, b in self._stalls[bisect.bisect_right(ends, start) :]:
            if a >= end:
                break
            total += max(0.0, min(end, b) - max(start, a))
        return total

    def _excuse_stalls(self) -> None:
        """Mark the late answers and timeouts that only this process's stalls explain.

        Judged at the end: an answer read right after a stall may be handled before the probe
        that records the stall runs."""
        ledger = self.ledger
        ends = [b for _, b in self._stalls]
        for request_id, count, sent_at, done_at, allowed in self._suspects:
            stalled = self._stalled(sent_at, done_at, ends)
            if allowed is None:
                if not stalled:
                    continue
                ledger.timeouts_in_stalls += 1
            elif done_at - sent_at - stalled <= allowed:
                ledger.late_in_stalls += 1
            else:
                continue
            first = ledger.request_index[request_id]
            for row in range(first, first + count):
                ledger.set(row, "stalled", 1)
        self._suspects.clear()

    def _suspect(self, request: SimRequest, result: Result, allowed: float | None) -> None:
        slots = len(request.opportunity.slots)
        self._suspects.append((request.id, slots, result.sent_at, result.done_at, allowed))

    def _behind(self, request: SimRequest) -> None:
        ledger = self.ledger
        ledger.requests += 1
        ledger.versions[request.version] += 1
        ledger.request_errors["behind"] += 1
        self._not_sent += 1
        self._rows(request, ledger.requests, NOT_SENT)

    def _send(self, request: SimRequest, lag: float) -> None:
        ledger = self.ledger
        ledger.requests += 1
        seq = ledger.requests
        ledger.lag_ms.append(lag * 1000)
        ledger.versions[request.version] += 1
        if request.gzip:
            ledger.gzip_sent += 1
        self._sim_now = request.opportunity.sim_ts
        index = next(self._next_target)
        netloc, path = self._targets[index]
        data = build_request("POST", path, netloc, request.headers, request.body)
        deadline = request.deadline_ms / 1000
        self._bid_pools[index].request(
            data,
            timeout=deadline + self.settings.tmax_slack_ms / 1000,
            expire_at=self._loop().time() + deadline,
            callback=lambda result: self._on_answer(request, seq, result),
        )

    def _rows(self, request: SimRequest, seq: int, outcome: int, **values: float) -> None:
        opp = request.opportunity
        t_sim = opp.sim_ts - self._sim_start
        first = -1
        for slot in opp.slots:
            row = self._row(request, seq, slot, outcome, t_sim, **values)
            first = row if first < 0 else first
        self.ledger.request_index.setdefault(request.id, first)

    def _row(
        self,
        request: SimRequest,
        seq: int,
        slot: Slot,
        outcome: int,
        t_sim: float,
        **values: float,
    ) -> int:
        opp = request.opportunity
        values.setdefault("floor_usd_micros", auction.to_usd(slot.floor, slot.floor_currency))
        return self.ledger.add_row(
            req=seq,
            t_sim=t_sim,
            deadline_ms=request.deadline_ms,
            outcome=outcome,
            auction_type=opp.auction_type,
            crawler=int(opp.user.crawler),
            no_consent=int(opp.gdpr and not opp.consent_ok),
            coppa=int(opp.coppa),
            user=opp.user.index,
            personal=int(personalised(opp)),
            **values,
        )

    def _on_answer(self, request: SimRequest, seq: int, result: Result) -> None:
        ledger = self.ledger
        response = result.response
        if response is None:
            ledger.request_errors[result.error] += 1
            if result.error in _NOT_SENT_ERRORS:
                self._not_sent += 1
                self._rows(request, seq, NOT_SENT)
            else:
                ledger.sent += 1
                if result.error == "timeout":
                    self._timeouts += 1
                    self._suspect(request, result, None)
                self._rows(request, seq, TIMEOUT if result.error == "timeout" else ERROR)
            return
        ledger.sent += 1
        ledger.answered += 1
        latency = (result.done_at - result.sent_at) * 1000
        ledger.latencies_ms.append(latency)
        self._recent.append(latency)
        ledger.request_statuses[response.status] += 1
        late = latency > request.deadline_ms
        common: dict[str, float] = {"latency_ms": latency, "status": response.status}
        if late:
            self._late += 1
            ledger.late_ms.append(latency - request.deadline_ms)
            self._suspect(request, result, request.deadline_ms / 1000)
        if response.status == 204:
            self._rows(request, seq, LATE if late else NO_BID, **common)
            return
        if response.status != 200:
            self._rows(request, seq, LATE if late else ERROR, **common)
            return
        try:
            parsed = auction.parse_response(response.decoded_body())
        except (ValueError, HttpProtocolError) as exc:
            log.debug("bad bid response: %s", exc)
            outcome = LATE if late else ERROR
            self._rows(request, seq, outcome, loss_reason=auction.INVALID_RESPONSE, **common)
            return
        self._auction(request, seq, parsed, late, common)

    def _auction(
        self,
        request: SimRequest,
        seq: int,
        response: auction.BidResponse,
        late: bool,
        common: dict[str, float],
    ) -> None:
        opp = request.opportunity
        ledger = self.ledger
        best: dict[str, tuple[auction.RtbBid, str]] = {}
        for seatbid in response.seatbid:
            for bid in seatbid.bid:
                held = best.get(bid.impid)
                if held is None or bid.price > held[0].price:
                    best[bid.impid] = (bid, seatbid.seat)
        if best and response.id != request.id:
            reason = auction.EXPIRED if late else auction.INVALID_AUCTION_ID
            for bid, seat in best.values():
                self.notifier.loss(request, bid, seat, response.cur, reason, 0)
            self._rows(request, seq, LATE if late else ERROR, loss_reason=reason, **common)
            return
        t_sim = opp.sim_ts - self._sim_start
        first = -1
        for slot in opp.slots:
            entry = best.get(slot.imp_id)
            if entry is None:
                row = self._row(request, seq, slot, LATE if late else NO_BID, t_sim, **common)
                first = row if first < 0 else first
                continue
            bid, seat = entry
            ledger.bids += 1
            campaign_id, creative_id = _int_id(bid.cid), _int_id(bid.crid)
            currency = response.cur or "USD"
            try:
                bid_usd = auction.to_usd(auction.price_micros(bid.price), currency)
                outcome = (
                    auction.Outcome(False, auction.EXPIRED, 0, 0)
                    if late
                    else auction.run(bid, slot, opp.auction_type, currency)
                )
            except ValueError:  # an unknown currency
                bid_usd = 0
                outcome = auction.Outcome(False, auction.INVALID_RESPONSE, 0, 0)
            floor = auction.to_usd(slot.floor, slot.floor_currency)
            if bid.dealid:
                deal = next((d for d in slot.deals if d.id == bid.dealid), None)
                floor = deal.floor_usd_micros if deal is not None else floor
            p_click = self.market.p_click(opp, slot, campaign_id, creative_id)
            p_install = self.market.p_install_given_click(opp, slot, campaign_id)
            if late:
                kind = LATE
            elif outcome.won:
                kind = WON
            elif outcome.loss_reason in (
                auction.BELOW_FLOOR,
                auction.BELOW_DEAL_FLOOR,
                auction.OUTBID,
                auction.LOST_TO_DEAL,
            ):
                kind = LOST
            else:
                kind = INVALID
            row = self._row(
                request,
                seq,
                slot,
                kind,
                t_sim,
                loss_reason=outcome.loss_reason,
                campaign_id=campaign_id,
                creative_id=creative_id,
                bid_usd_micros=bid_usd,
                clear_usd_micros=outcome.clear_usd_micros,
                p_click=p_click,
                p_install=p_install,
                floor_usd_micros=floor,
                market_median_usd_micros=0 if slot.deals else slot.median_usd_micros,
                **common,
            )
            first = row if first < 0 else first
            if outcome.won:
                ledger.wins += 1
                self.notifier.win(request, bid, seat, currency, outcome, row, p_click, p_install)
            else:
                self.notifier.loss(
                    request, bid, seat, currency, outcome.loss_reason, outcome.winning_usd_micros
                )
        ledger.request_index.setdefault(request.id, first)

    # -- the live view -------------------------------------------------------------------------

    def progress(self) -> Progress:
        loop = self._loop()
        elapsed = loop.time() - self._start if self._start else 0.0
        recent = sorted(self._recent)
        self._recent = []
        last_t, last_n = self._last_progress
        rate = (self.ledger.requests - last_n) / (elapsed - last_t) if elapsed > last_t else 0.0
        self._last_progress = (elapsed, self.ledger.requests)
        return Progress(
            elapsed=elapsed,
            sim_ts=self._sim_now,
            requests=self.ledger.requests,
            answered=self.ledger.answered,
            bids=self.ledger.bids,
            wins=self.ledger.wins,
            late=self._late,
            timeouts=self._timeouts,
            not_sent=self._not_sent,
            spend_usd_micros=sum(self.ledger.spend_usd_micros.values()),
            p50_ms=recent[len(recent) // 2] if recent else 0.0,
            p99_ms=recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else 0.0,
            rate=rate,
        )


def _host_port(netloc: str) -> tuple[str, int]:
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit():
        return netloc.strip("[]"), 80
    return host.strip("[]"), int(port)
