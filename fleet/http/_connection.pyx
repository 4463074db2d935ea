# cython: language_level=3
"""The compiled twin of ``fleet.http.connection.PyConnection``: the same connection, statement
for statement, as an extension type. What a request costs between the read that completes it
and the write of its answer is C: the framer's fields and the request's read directly, the
clock read with clock_gettime, the usual answer (a ``Response`` without extra headers,
fleet/http/_wire.pyx) formatted into one buffer, written once. ``connection.py`` stays the
reference and the documentation; tests/integration/test_http_server.py runs the server over
both. A change to one is a change to the other."""

import contextlib
import functools
import inspect
from asyncio import Future
import logging
import socket

from fleet.http._framing cimport Framer, Request
from fleet.http._wire cimport Response
from fleet.http.bridge import serve_with_application
from fleet.http.errors import HttpError
from fleet.http.framing import BODY, DONE, HEAD
from fleet.http.heads import CONTINUE, INTERNAL_ERROR, error_response
from fleet.http.limits import LINGER_BYTES, LINGER_S

log = logging.getLogger("fleet.http")


def _discard(data):
    """Writes after the connection is gone go nowhere."""


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_MONOTONIC


cdef inline double _monotonic():
    """``time.monotonic()`` (the same clock on Linux), without the call."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef int _BODY = BODY
cdef int _DONE = DONE
cdef int _HEAD = HEAD
cdef Py_ssize_t _LINGER_BYTES = LINGER_BYTES
cdef double _LINGER_S = LINGER_S

cdef bytes _NOT_FOUND = b'{"error":"no such path"}'
cdef bytes _NOT_ALLOWED = b'{"error":"method not allowed"}'


cdef bytes _answer(object response, bint close, bint keep_alive_10, bint head):
    """The bytes of a ``Response``: built in C, or by a subclass's own ``to_bytes``."""
    if type(response) is Response:
        return (<Response>response).answer(close, keep_alive_10, head)
    return response.to_bytes(close=close, keep_alive_10=keep_alive_10, head=head)


def answer_bytes(response, bint close, bint keep_alive_10=False, bint head=False):
    """What the connection writes for ``response`` (for the tests: ``to_bytes``' equal)."""
    return _answer(response, close, keep_alive_10, head)


cdef class Connection:
    """One client connection (see fleet/http/server.py's docstring)."""

    cdef readonly object server
    cdef readonly Framer framer
    cdef public object transport
    cdef public object write
    cdef public str remote_ip
    cdef public bint busy, queued, backlogged, write_paused
    cdef public double write_paused_since, ready_since, linger_since
    cdef public Py_ssize_t counted, served, lingered
    cdef readonly object advance
    cdef object _call_soon
    cdef object _lag
    cdef dict _routes
    cdef Py_ssize_t _request_cap

    def __init__(self, server):
        self.server = server
        self.framer = Framer(server.limits)
        self.transport = None
        self.write = _discard
        self.remote_ip = ""
        self.busy = False  # an answer is under way (an awaitable handler, the Application)
        self.queued = False  # _advance is scheduled
        self.backlogged = False  # requests wait behind another: reading paused
        self.write_paused = False  # the peer does not read its answers
        self.write_paused_since = 0.0
        self.counted = 0  # this connection's requests in the server's in_flight
        self.served = 0
        self.ready_since = _monotonic()  # since when the client, not we, holds things up
        self.linger_since = 0.0  # a refusal was answered: reading only to drop
        self.lingered = 0
        self.advance = self._advance  # bound once: scheduled for every request
        # read once: what the server fixes before it listens
        self._call_soon = server.call_soon
        self._lag = server.lag
        self._routes = server.routes
        self._request_cap = server.limits.max_requests_per_connection

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        server = self.server
        if len(server.connections_open) >= server.cap:
            server.rejected()
            transport.abort()
            return
        self.write = transport.write
        address = transport.get_extra_info("peername")
        self.remote_ip = address[0] if isinstance(address, tuple) and address else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=0)
        server.connections_open.add(self)
        server.metrics.connections(len(server.connections_open))

    def connection_lost(self, exc):
        server = self.server
        if self in server.connections_open:
            server.connections_open.discard(self)
            server.metrics.connections(len(server.connections_open))
        server.in_flight -= self.counted
        self.counted = 0
        self.write = _discard

    def data_received(self, bytes data):
        cdef Py_ssize_t before, queued, added
        cdef double now
        if self.linger_since:
            self.lingered += len(data)
            if self.lingered > _LINGER_BYTES:
                self.abort()
            return
        cdef Framer framer = self.framer
        requests = framer.requests
        before = len(requests)
        now = _monotonic()
        if self._lag is not None:
            now -= self._lag()
        framer.feed(data, now)
        queued = len(requests)
        if queued > before:
            added = queued - before
            self.counted += added
            self.server.in_flight += added
        elif framer.continue_due and not (self.busy or queued):
            framer.continue_due = False
            self.write(CONTINUE)
        if (queued or framer.phase == _DONE) and not (self.queued or self.busy):
            # Answered from the loop's ready queue, as a coroutine would be: the lag probe then
            # runs between reading requests and answering them, as load shedding expects.
            self.queued = True
            self._call_soon(self.advance)
        if queued > 1 or (queued and self.busy):
            self._backlog(True)

    def pause_writing(self):
        self.write_paused = True
        self.write_paused_since = _monotonic()
        self._flow()

    def resume_writing(self):
        self.write_paused = False
        self._go_on()

    # -- answering ------------------------------------------------------------------------------

    def _advance(self):
        """Answer the next complete request (one per loop iteration), or the framing error
        once every request before it is answered."""
        self.queued = False
        transport = self.transport
        if self.busy or self.write_paused or self.linger_since or transport is None:
            return
        if transport.is_closing():
            return
        cdef Framer framer = self.framer
        try:
            if framer.requests:
                self._serve(framer.requests.popleft())
            elif framer.error is not None:
                self._refuse(framer.error)
                return
            elif framer.phase == _DONE:  # the last request closed the connection
                self.close()
                return
        except Exception:
            log.exception("connection from %s failed", self.remote_ip)
            self.abort()
            return
        if self.busy or transport.is_closing():
            return
        self._next()

    cdef _next(self):
        cdef Framer framer = self.framer
        if framer.requests or framer.phase == _DONE:
            self._backlog(True)
            self.queued = True
            self._call_soon(self.advance)
        else:
            if self.backlogged:
                self._backlog(False)
            if framer.continue_due and framer.phase == _BODY:
                framer.continue_due = False
                self.write(CONTINUE)

    cdef _serve(self, Request request):
        server = self.server
        self.served += 1
        cdef Py_ssize_t cap = self._request_cap
        if cap and self.served >= cap and not request.close:
            request.close = True
            server.metrics.count("closed", "request_cap")
        elif self.framer.upgrade_refused and not self.framer.requests:
            server.metrics.count("closed", "upgrade")
        if server.draining:
            request.close = True
        request.remote_ip = self.remote_ip
        cdef str target = request.target
        route = self._routes.get(target if "?" not in target else request.path)
        if route is None:
            if server.app is None:
                self._respond(request, Response(404, _NOT_FOUND))
            else:
                self._wait(request, self._bridge(request))
            return
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            self._respond(request, Response(405, _NOT_ALLOWED, headers=(("Allow", allow),)))
            return
        try:
            result = route.handler(request)
        except Exception:
            result = self._handler_failed(request)
        if result is None or isinstance(result, (bytes, Response)):
            self._respond(request, result)
        elif isinstance(result, Future):  # answered from its done callback, no task
            self.busy = True
            self._flow()
            result.add_done_callback(functools.partial(self._settled, request))
        elif inspect.isawaitable(result):
            self._wait(request, result)
        else:
            self._respond(request, self._handler_failed(request, result))

    cdef _respond(self, Request request, result):
        self.counted -= 1
        self.server.in_flight -= 1
        self.ready_since = _monotonic()
        cdef bint close = request.close
        if result is None:  # no answer at all (e.g. past the auction's deadline)
            self.close()
            return
        if isinstance(result, Response):
            close = close or result.close
            result = _answer(
                result, close, request.version == "HTTP/1.0", request.method == "HEAD"
            )
        self.write(result)
        if close:
            self.framer.phase = _DONE
            self.framer.requests.clear()
            self.close()

    cdef _wait(self, Request request, work):
        self.busy = True
        self._flow()
        self.server.run(self._finish(request, work))

    async def _finish(self, Request request, work):
        try:
            result = await work
        except HttpError as exc:
            self._refused(exc)
            return
        except Exception:
            result = self._handler_failed(request)
        self._answered(request, result)

    def _settled(self, Request request, future):
        """``_finish`` of a handler's future, called when it is done; a cancelled one closes the
        connection unanswered."""
        try:
            result = None if future.cancelled() else future.result()
        except HttpError as exc:
            self._refused(exc)
            return
        except Exception:
            result = self._handler_failed(request)
        self._answered(request, result)

    cdef _refused(self, exc):
        """A handler that waited refused its request: not counted, refused on the wire."""
        self.busy = False
        self.counted -= 1
        self.server.in_flight -= 1
        self._refuse(exc)

    cdef _answered(self, Request request, result):
        """A handler that waited has its result: answer it, then the next request."""
        self.busy = False
        self._respond(request, result)
        if not self.closing:
            self._next()
            self._flow()

    async def _bridge(self, Request request):
        app = self.server.app
        assert app is not None
        data, close = await serve_with_application(app, request)
        request.close = request.close or close
        return data

    cdef _handler_failed(self, Request request, result=None):
        self.server.handler_failed(request, result)
        request.close = True
        return Response(500, INTERNAL_ERROR, close=True)

    cdef _refuse(self, error):
        """A request that cannot be framed or served: answer, shut the write side, and drop
        what still comes for a moment (the framing of anything after it cannot be trusted)."""
        self.server.metrics.count("refused", error.metric)
        self.write(error_response(error.status, error.reason, close=True))
        self._linger()

    cdef _linger(self):
        transport = self.transport
        self.framer.phase = _DONE
        self.framer.requests.clear()
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            self.close()
            return
        self.linger_since = _monotonic()
        with contextlib.suppress(OSError, RuntimeError):
            transport.write_eof()
        self.backlogged = self.busy = False
        transport.resume_reading()

    # -- timers ---------------------------------------------------------------------------------

    def expired(self, double now):
        """The timer that has run out for this connection, if any (the sweeper asks)."""
        if self.linger_since:
            return "linger" if now - self.linger_since > _LINGER_S else None
        cdef Framer framer = self.framer
        limits = self.server.limits
        if self.write_paused:  # a client that does not read its answers
            stalled = now - self.write_paused_since > limits.idle_timeout_s
            return "write" if stalled else None
        if self.busy or framer.requests:
            return None  # waiting on us, not on the client
        cdef double since = max(framer.since, self.ready_since)
        cdef int phase = framer.phase
        if phase == _HEAD:
            return "head" if now - since > limits.header_timeout_s else None
        if phase == _BODY:
            return "body" if now - since > limits.body_timeout_s else None
        if phase == _DONE:
            return None
        return "idle" if now - since > limits.idle_timeout_s else None

    def time_out(self, str phase):
        if phase == "linger":
            self.abort()
            return
        self.server.metrics.count("timeout", phase)
        if phase == "write":  # nothing more can be written: drop what is queued
            self.abort()
        elif phase == "idle":
            self.close()
        else:
            self.write(error_response(408, f"{phase} not received in time", close=True))
            self._linger()

    # -- flow and closing -----------------------------------------------------------------------

    cdef _backlog(self, bint on):
        if self.backlogged != on:
            self.backlogged = on
            self._flow()

    @property
    def closing(self):
        transport = self.transport
        return transport is None or transport.is_closing()

    @property
    def writing(self):
        transport = self.transport
        return transport is not None and transport.get_write_buffer_size() > 0

    cdef _flow(self):
        """Read while nothing holds this connection up."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.busy or self.write_paused or self.backlogged:
            transport.pause_reading()
        else:
            transport.resume_reading()

    cdef _go_on(self):
        self._flow()
        if (self.framer.requests or self.framer.phase == _DONE) and not self.queued:
            self.queued = True
            self._call_soon(self.advance)

    def close(self):
        """Close once what is written is on the wire."""
        if self.transport is not None:
            self.transport.close()

    def abort(self):
        """Close now, dropping anything not yet sent."""
        if self.transport is not None:
            self.transport.abort()
