"""One XSUB/XPUB bus proxy: publishers connect to "in", subscribers to "out".

    python -m fleet.proxy --in tcp://127.0.0.1:5550 --out tcp://127.0.0.1:5551

Forwarding runs in libzmq's own proxy loop on a worker thread (no GIL, no Python per message);
the event loop only waits for SIGTERM/SIGINT or ``stop`` and then steers the loop to terminate.
Endpoints may use port ``*``: the line ``ready in=<endpoint> out=<endpoint>`` on stdout says
where the proxy actually listens, once it does.

A slow subscriber does not stall the others: past the high-water mark the XPUB side drops for
that subscriber only, and the subscriber sees the drop as a sequence gap.

Neither side allocates what a peer announces: a frame larger than BUS_MAX_MESSAGE on "in" (or a
subscription larger than BUS_MAX_SUBSCRIPTION on "out") drops that peer's connection, and the
proxy goes on serving the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import zmq

from fleet.bus import configure_socket
from fleet.bus.sockets import BUS_MAX_MESSAGE, BUS_MAX_SUBSCRIPTION
from fleet.errors import BusError
from fleet.settings import zmq_endpoint

log = logging.getLogger("fleet.proxy")

_control_ids = itertools.count()


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BusError(f"cannot bind {endpoint}: {exc}") from exc
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


async def run_proxy(
    frontend: str,
    backend: str,
    *,
    stop: asyncio.Event | None = None,
    hwm: int = 100_000,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
    on_ready: Callable[[str, str], None] | None = None,
    max_message: int = BUS_MAX_MESSAGE,
) -> None:
    """Forward from ``frontend`` (XSUB, bound) to ``backend`` (XPUB, bound) until ``stop`` is set
    or the task is cancelled; ``on_ready(in_endpoint, out_endpoint)`` once both are bound.
    Raises BusError when an endpoint cannot be bound."""
    ctx = context if context is not None else zmq.Context()
    sockets: list[zmq.Socket[bytes]] = []

    def socket(kind: int) -> zmq.Socket[bytes]:
        sock = ctx.socket(kind)
        sockets.append(sock)
        return sock

    forwarding: asyncio.Future[int] | None = None
    steer: zmq.Socket[bytes] | None = None
    try:
        xsub, xpub = socket(zmq.XSUB), socket(zmq.XPUB)
        configure_socket(xsub, hwm, max_message=max_message)  # data from publishers
        configure_socket(xpub, hwm, max_message=BUS_MAX_SUBSCRIPTION)  # subscriptions
        inside = _bind(xsub, frontend)
        outside = _bind(xpub, backend)
        control_endpoint = f"inproc://fleet-proxy-control-{next(_control_ids)}"
        control, steer = socket(zmq.PAIR), socket(zmq.PAIR)
        control.bind(control_endpoint)
        steer.connect(control_endpoint)
        forwarding = asyncio.ensure_future(
            asyncio.to_thread(zmq.proxy_steerable, xsub, xpub, None, control)
        )
        log.info("bus proxy in=%s out=%s", inside, outside)
        if on_ready is not None:
            on_ready(inside, outside)
        waiters: list[asyncio.Future[Any]] = [forwarding]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters[1:]:
                waiter.cancel()
        if forwarding.done():
            forwarding.result()  # the proxy loop ended on its own: raise what ended it
            raise BusError("bus proxy loop ended unexpectedly")
    finally:
        if forwarding is not None and not forwarding.done():
            assert steer is not None
            steer.send(b"TERMINATE")
            with contextlib.suppress(zmq.ZMQError):
                await asyncio.shield(forwarding)
        for sock in sockets:
            sock.close(linger=0)
        if context is None:
            ctx.term()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fleet.proxy", description="Run one XSUB/XPUB bus proxy."
    )
    parser.add_argument("--in", dest="frontend", required=True, help="XSUB endpoint (publishers)")
    parser.add_argument("--out", dest="backend", required=True, help="XPUB endpoint (subscribers)")
    parser.add_argument("--hwm", type=int, default=100_000, help="high-water mark, messages")
    return parser


def proxy_main(argv: list[str] | None = None) -> int:
    """Process entry: run until SIGTERM or SIGINT; 0 on a clean stop, 2 on bad arguments or a
    busy endpoint."""
    args = _parser().parse_args(argv)
    for flag, value in (("--in", args.frontend), ("--out", args.backend)):
        reason = zmq_endpoint(value)
        if reason:
            print(f"fleet.proxy: {flag} {value!r} {reason}", file=sys.stderr)
            return 2
    if args.hwm < 0:
        print("fleet.proxy: --hwm must be 0 or more", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def ready(inside: str, outside: str) -> None:
        print(f"ready in={inside} out={outside}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_proxy(args.frontend, args.backend, stop=stop, hwm=args.hwm, on_ready=ready)

    try:
        asyncio.run(main())
    except BusError as exc:
        print(f"fleet.proxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(proxy_main())
