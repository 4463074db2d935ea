"""Attacks on a bidder over loopback, each run in its own process for a bounded time (blocking
sockets, a ``select`` loop, nothing shared with the test's event loop). ``run`` returns what
the attacker saw: answers by status, and connections the server closed."""

from __future__ import annotations

import collections
import gzip
import json
import select
import socket
import time
from collections.abc import Callable

Seen = dict[str, int]
BID = b"POST /openrtb2/bid HTTP/1.1\r\nHost: bidder\r\n"


def _connect(port: int) -> socket.socket | None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None
    sock.setblocking(False)
    return sock


def _status(data: bytes) -> str:
    return data[9:12].decode("latin-1", "replace") if data.startswith(b"HTTP/1.1 ") else "none"


def _drain(sock: socket.socket, seen: Seen) -> bool:
    """Read what the server sent; False once it closed (counted by the first status seen)."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return True
    except OSError:
        seen["reset"] += 1
        return False
    if not data:
        seen["closed"] += 1
        return False
    seen[_status(data)] += 1
    return True


def _trickle(port: int, deadline: float, seen: Seen, count: int, start: bytes, drip: bytes,
             every: float) -> None:  # fmt: skip
    """``count`` connections send ``start``, then ``drip`` every ``every`` seconds each."""
    socks: list[socket.socket] = []
    next_drip = time.monotonic()
    while time.monotonic() < deadline:
        while len(socks) < count and time.monotonic() < deadline:
            sock = _connect(port)
            if sock is None:
                seen["refused"] += 1
                break
            try:
                sock.send(start)
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        readable, _, _ = select.select(socks, [], [], 0.02)
        for sock in readable:
            if not _drain(sock, seen):
                socks.remove(sock)
                sock.close()
        if time.monotonic() >= next_drip:
            next_drip += every
            for sock in list(socks):
                try:
                    sock.send(drip)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    socks.remove(sock)
                    sock.close()
    for sock in socks:
        sock.close()


def _flood(port: int, deadline: float, seen: Seen, count: int, start: bytes, chunk: bytes) -> None:
    """``count`` connections send ``start`` then ``chunk`` as fast as the server takes it;
    a connection the server closes is opened again."""
    socks: list[socket.socket] = []
    while time.monotonic() < deadline:
        while len(socks) < count:
            sock = _connect(port)
            if sock is None:
                seen["refused"] += 1
                time.sleep(0.01)
                break
            try:
                sock.send(start)
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        readable, writable, _ = select.select(socks, socks, [], 0.02)
        for sock in readable:
            if not _drain(sock, seen) and sock in socks:
                socks.remove(sock)
                sock.close()
        for sock in writable:
            if sock not in socks:
                continue
            try:
                sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                socks.remove(sock)
                sock.close()
    for sock in socks:
        sock.close()


def _repeat(port: int, deadline: float, seen: Seen, request: bytes) -> None:
    """One connection at a time sends ``request`` and reads the answer, again and again."""
    sock: socket.socket | None = None
    while time.monotonic() < deadline:
        if sock is None:
            sock = _connect(port)
            if sock is None:
                seen["refused"] += 1
                continue
        try:
            sock.setblocking(True)
            sock.settimeout(2)
            sock.sendall(request)
            data = sock.recv(65536)
        except OSError:
            seen["reset"] += 1
            sock.close()
            sock = None
            continue
        seen[_status(data)] += 1
        if not data or b"Connection: close" in data:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def slowloris(port: int, deadline: float, seen: Seen) -> None:
    _trickle(port, deadline, seen, 60, BID + b"X-A: ", b"a", 0.1)


def slow_bodies(port: int, deadline: float, seen: Seen) -> None:
    start = BID + b'Content-Length: 2000\r\n\r\n{"id":'
    _trickle(port, deadline, seen, 150, start, b" ", 0.2)


def one_byte_chunks(port: int, deadline: float, seen: Seen) -> None:
    _flood(port, deadline, seen, 4, BID + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\na\r\n" * 64)


def crlf_flood(port: int, deadline: float, seen: Seen) -> None:
    _flood(port, deadline, seen, 2, b"\r\n", b"\r\n" * 512)


def connections_to_the_cap(port: int, deadline: float, seen: Seen) -> None:
    socks = []
    while time.monotonic() < deadline and len(socks) < 260:
        sock = _connect(port)
        if sock is None:
            seen["refused"] += 1
            continue
        socks.append(sock)
    while time.monotonic() < deadline:
        readable, _, _ = select.select(socks, [], [], 0.05)
        for sock in readable:
            if not _drain(sock, seen):
                socks.remove(sock)
                sock.close()
    for sock in socks:
        sock.close()


def oversized_heads(port: int, deadline: float, seen: Seen) -> None:
    _repeat(port, deadline, seen, BID + b"X-Big: " + b"h" * 20_000 + b"\r\n\r\n")


def oversized_bodies(port: int, deadline: float, seen: Seen) -> None:
    declared = BID + b"Content-Length: 10000000\r\n\r\n" + b"a" * 60_000
    chunk = b"%x\r\n%s\r\n" % (60_000, b"a" * 60_000)
    chunked = BID + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 6  # 360 kB decoded
    while time.monotonic() < deadline:
        _repeat(port, min(deadline, time.monotonic() + 0.2), seen, declared)
        _repeat(port, min(deadline, time.monotonic() + 0.2), seen, chunked)


def gzip_bombs(port: int, deadline: float, seen: Seen) -> None:
    bomb = gzip.compress(b"{" + b" " * 50_000_000 + b"}", 9)
    _repeat(port, deadline, seen, BID + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(bomb) + bomb)  # fmt: skip


def deep_nesting(port: int, deadline: float, seen: Seen) -> None:
    depth = 40_000
    body = b'{"id":"x","imp":[{"id":"1","banner":{"w":300,"h":250}}],"ext":' + (
        b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    )
    arrays = json.dumps({"id": "y"}).encode()[:-1] + b',"imp":' + b"[" * depth + b"]" * depth + b"}"
    while time.monotonic() < deadline:
        for doc in (body, arrays):
            request = BID + b"Content-Length: %d\r\n\r\n" % len(doc) + doc
            _repeat(port, min(deadline, time.monotonic() + 0.1), seen, request)


ATTACKS: dict[str, Callable[[int, float, Seen], None]] = {
    "slowloris": slowloris,
    "slow_bodies": slow_bodies,
    "one_byte_chunks": one_byte_chunks,
    "crlf_flood": crlf_flood,
    "connections_to_the_cap": connections_to_the_cap,
    "oversized_heads": oversized_heads,
    "oversized_bodies": oversized_bodies,
    "gzip_bombs": gzip_bombs,
    "deep_nesting": deep_nesting,
}


def run(name: str, port: int, seconds: float, out: object) -> None:
    """The attack ``name`` for ``seconds``; what it saw is put on ``out`` (a queue)."""
    seen: Seen = collections.defaultdict(int)
    ATTACKS[name](port, time.monotonic() + seconds, seen)
    out.put(dict(seen))  # type: ignore[attr-defined]
