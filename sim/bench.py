"""How many requests per second can the exchange client offer on this machine?

``python -m sim.bench`` starts a minimal HTTP load target in a child process (it answers every
POST with 204, or with a fixed bid when ``--bids``), then offers open-loop traffic at rising
rates for a few seconds each through (1) this package's client with pre-built requests, (2)
tornado's ``SimpleAsyncHTTPClient`` the same way, and (3) the whole exchange (traffic
generation, auctions, notices; its rate follows the market's daily cycle, so it offers more
than the nominal rate at the start of the simulated day). For each it prints the highest rate
it kept up with (everything due sent within 3 % of the time, scheduling lag p99 < 25 ms, no
request unsent or timed out) and the ratio of (1) to (2).

The target is a measuring device for the client only; the demo never uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import httptools

from fleet.processes import free_port, wait_for_port
from sim.http1 import build_request
from sim.httpclient import Pool, Result

_BID = (
    b'{"id":"%s","cur":"USD","seatbid":[{"seat":"bench","bid":[{"id":"b","impid":"1",'
    b'"price":0.5,"crid":"1","cid":"1","adm":"<b>ad</b>"}]}]}'
)


class _Target(asyncio.Protocol):
    """Answers every request (framed by llhttp) with a 204, or a fixed bid."""

    def __init__(self, bids: bool) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._answer = b"HTTP/1.1 204 No Content\r\n\r\n"
        if bids:
            body = _BID % b"x"
            self._answer = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                b"\r\n\r\n%s" % (len(body), body)
            )
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.abort()

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(self._answer)


def _serve(port: int, bids: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Target(bids), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def _open_loop(
    rate: float, seconds: float, send: Callable[[float], None], in_flight: Callable[[], int]
) -> tuple[int, float, float]:
    """Offer ``rate`` req/s for ``seconds``; (sent, achieved rate, lag p99 ms).

    The achieved rate is what was sent over the time it took: an open loop that falls behind
    takes longer than ``seconds`` to send what was due in them."""
    rng = random.Random(1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    due = 0.0
    sent = 0
    lags: list[float] = []
    while due < seconds:
        now = loop.time() - start
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while due <= now and due < seconds:
            lags.append(now - due)
            send(due)
            sent += 1
            due += rng.expovariate(rate)
        await asyncio.sleep(0)
    elapsed = max(seconds, loop.time() - start)
    for _ in range(200):
        if not in_flight():
            break
        await asyncio.sleep(0.01)
    lags.sort()
    return sent, sent / elapsed, lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0


async def bench_own(port: int, rate: float, seconds: float) -> dict[str, Any]:
    pool = Pool("127.0.0.1", port, max_connections=64)
    body = b'{"id":"x","imp":[{"id":"1","banner":{"w":300,"h":250}}]}' * 20
    data = build_request(
        "POST", "/openrtb2/bid", f"127.0.0.1:{port}", (("Content-Type", "application/json"),), body
    )
    errors = 0

    def done(result: Result) -> None:
        nonlocal errors
        if result.response is None:
            errors += 1

    loop = asyncio.get_running_loop()

    def send(_: float) -> None:
        pool.request(data, timeout=0.3, expire_at=loop.time() + 0.1, callback=done)

    sent, achieved, lag = await _open_loop(rate, seconds, send, lambda: pool.in_flight)
    await pool.close()
    return {"sent": sent, "achieved": achieved, "lag_p99_ms": lag, "errors": errors}


async def bench_tornado(port: int, rate: float, seconds: float) -> dict[str, Any]:
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
    from tornado.simple_httpclient import SimpleAsyncHTTPClient

    client = SimpleAsyncHTTPClient(force_instance=True, max_clients=64)
    assert isinstance(client, AsyncHTTPClient)
    body = b'{"id":"x","imp":[{"id":"1","banner":{"w":300,"h":250}}]}' * 20
    url = f"http://127.0.0.1:{port}/openrtb2/bid"
    errors = 0
    pending = 0
    tasks: set[asyncio.Future[Any]] = set()

    async def one() -> None:
        nonlocal errors, pending
        pending += 1
        try:
            await client.fetch(
                HTTPRequest(url, method="POST", body=body, request_timeout=0.3),
                raise_error=True,
            )
        except HTTPClientError as exc:
            if exc.code != 204:
                errors += 1
        except Exception:
            errors += 1
        finally:
            pending -= 1

    def send(_: float) -> None:
        task = asyncio.ensure_future(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sent, achieved, lag = await _open_loop(rate, seconds, send, lambda: pending)
    client.close()
    return {"sent": sent, "achieved": achieved, "lag_p99_ms": lag, "errors": errors}


async def bench_exchange(port: int, rate: float, seconds: float) -> dict[str, Any]:
    from sim.exchange import Exchange
    from sim.market import Market, MarketParams
    from sim.settings import SimSettings
    from sim.traffic import Schedule, Traffic

    settings = SimSettings(rate=rate, duration=seconds, drain=0.0, users=5000)
    market = Market(MarketParams(users=settings.users), settings.seed)
    start = settings.start(datetime.now(UTC)).timestamp()
    exchange = Exchange(
        market=market,
        traffic=Traffic(
            market, random.Random(2), gzip_share=0.2, ortb25_share=0.25, default_tmax_ms=100
        ),
        schedule=Schedule(market, random.Random(3), rate=rate, time_scale=576.0, sim_start=start),
        settings=settings,
        bid_urls=[f"http://127.0.0.1:{port}"],
        rng=random.Random(4),
    )
    ledger = await exchange.run()
    lags = sorted(ledger.lag_ms)
    not_sent = sum(
        v for k, v in ledger.request_errors.items() if k in ("expired", "queue_full", "behind")
    )
    return {
        "sent": ledger.sent,
        "achieved": ledger.requests / max(exchange.offer_seconds, seconds),
        "lag_p99_ms": lags[int(len(lags) * 0.99)] if lags else 0.0,
        "errors": not_sent + ledger.request_errors.get("timeout", 0),
    }


Bench = Callable[[int, float, float], Awaitable[dict[str, Any]]]


async def capacity(name: str, bench: Bench, port: int, rates: list[float], seconds: float) -> float:
    best = 0.0
    for rate in rates:
        r = await bench(port, rate, seconds)
        expected = r["sent"] / seconds  # the Poisson draw of this step, at the schedule's pace
        ok = r["achieved"] >= 0.97 * expected and r["lag_p99_ms"] < 25 and r["errors"] == 0
        print(
            f"  {name:<9} offered {rate:>6.0f}/s  achieved {r['achieved']:>7.0f}/s  "
            f"lag p99 {r['lag_p99_ms']:6.1f} ms  errors {r['errors']:>5}  "
            + ("ok" if ok else "BEHIND"),
            flush=True,
        )
        if not ok:
            break
        best = rate
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per step")
    parser.add_argument("--rates", default="500,1000,2000,3000,4000,6000", help="steps, req/s")
    parser.add_argument("--bids", action="store_true", help="the target answers with a bid")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    port = free_port()
    target = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, args.bids), daemon=True
    )
    target.start()
    try:
        wait_for_port("127.0.0.1", port, timeout=10)

        async def run() -> dict[str, float]:
            return {
                "own": await capacity("own", bench_own, port, rates, args.seconds),
                "tornado": await capacity("tornado", bench_tornado, port, rates, args.seconds),
                "exchange": await capacity("exchange", bench_exchange, port, rates, args.seconds),
            }

        try:
            import uvloop

            result = uvloop.run(run())
        except ImportError:
            result = asyncio.run(run())
    finally:
        target.terminate()
        target.join(5)
    base = result["tornado"] or 1.0
    print(
        f"kept up with: own client {result['own']:.0f}/s, tornado {result['tornado']:.0f}/s "
        f"(ratio {result['own'] / base:.2f}), whole exchange {result['exchange']:.0f}/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
