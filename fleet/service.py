"""The service skeleton: what every rtbfleet service does the same way, so that a new service is
a settings class, a component and a few lines of ``__main__``::

    # tracker/__main__.py
    import sys

    from fleet.service import run_service
    from tracker.service import TrackerService
    from tracker.settings import TrackerSettings

    if __name__ == "__main__":
        sys.exit(run_service("tracker", TrackerSettings, TrackerService,
                             health=lambda s: (s.host, s.port)))

What it does, in order:

- settings: built once (``cls.from_env()`` when the class has it, else ``load(cls)`` with its
  ``fleet`` field filled from FleetSettings); a bad value stops the process with one line
  naming the variable and exit status 2;
- logging: the fleet's level and format (JSON lines in production);
- the runtime a component receives: its name, the fleet settings, the fleet clock
  (``fleet.clock``), a Prometheus registry and the stop event;
- an HTTP endpoint when ``health`` gives one: ``GET /healthz`` (200 while the process runs),
  ``/readyz`` (200 once started and the component's ``ready()`` says so, else 503) and
  ``/metrics`` (the runtime's registry), answered from the first moment, even during start-up;
- SIGTERM and SIGINT set the stop event; ``runtime.stop(error)`` does too, from inside;
- clean stop: the component's ``stop()`` runs (also after a failed start), bounded by
  ``stop_timeout``, then the HTTP endpoint closes. The exit status is 0 after a requested stop,
  1 when the component failed (one line on stderr, no traceback for an expected error).

A component is any object with ``async start()`` and ``async stop()``; ``ready() -> bool`` is
optional (ready once started when absent). ``start()`` returns once the component serves;
background work belongs to the component, which cancels and awaits it in ``stop()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fleet.clock import FleetClock
from fleet.errors import FleetError, SettingsError
from fleet.logs import configure_logging
from fleet.settings import FleetSettings, load

if TYPE_CHECKING:  # prometheus_client is imported only once a process serves: a pre-forking
    # service (the bidder) must choose its multiprocess mode before the first import
    from prometheus_client import CollectorRegistry

log = logging.getLogger("fleet.service")

S = TypeVar("S")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    """What the skeleton hands a component: shared settings, the fleet clock, its metrics
    registry and the stop event (set on SIGTERM/SIGINT or by ``stop()``)."""

    name: str
    fleet: FleetSettings
    clock: FleetClock
    registry: CollectorRegistry
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None

    def stop(self, error: BaseException | None = None) -> None:
        """Ask the process to stop; with ``error``, it exits with status 1 naming it."""
        if error is not None and self.error is None:
            self.error = error
        self.stopping.set()

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Stop the process when ``task`` (a component's main loop) ends other than by being
        cancelled: a loop that returns or raises by itself leaves the service useless."""

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or self.stopping.is_set():
                return
            error = t.exception()
            self.stop(error or FleetError(f"{t.get_name()} ended"))

        task.add_done_callback(done)


Factory = Callable[[S, Runtime], Component]
HealthAddress = Callable[[S], tuple[str, int] | None]


def load_settings(source: type[S] | Callable[[], S]) -> S:
    """Build a service's settings: ``source.from_env()``, ``load(source)`` (then its ``fleet``
    field filled from FleetSettings), or ``source()`` for a plain loader. SettingsError on a
    bad value."""
    from_env = getattr(source, "from_env", None)
    if callable(from_env):
        return from_env()  # type: ignore[no-any-return]
    if isinstance(source, type) and dataclasses.is_dataclass(source):
        settings: Any = load(source)
        if any(f.name == "fleet" for f in dataclasses.fields(source)):
            settings = dataclasses.replace(settings, fleet=load(FleetSettings))
        return settings  # type: ignore[no-any-return]
    return source()


def fleet_of(settings: object) -> FleetSettings:
    """The fleet settings inside a service's settings (its ``fleet`` field), else the
    environment's."""
    fleet = getattr(settings, "fleet", None)
    return fleet if isinstance(fleet, FleetSettings) else load(FleetSettings)


def _is_ready(component: Component, started: bool) -> bool:
    if not started:
        return False
    ready = getattr(component, "ready", None)
    return bool(ready()) if callable(ready) else True


class HealthEndpoint:
    """``/healthz``, ``/readyz`` and ``/metrics`` on one port (Tornado)."""

    def __init__(self, ready: Callable[[], bool], registry: CollectorRegistry) -> None:
        import tornado.web
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        ready_fn, registry_ = ready, registry

        class Health(tornado.web.RequestHandler):
            def get(self) -> None:
                self.finish("ok\n")

        class Ready(tornado.web.RequestHandler):
            def get(self) -> None:
                if ready_fn():
                    self.finish("ready\n")
                else:
                    self.set_status(503)
                    self.finish("not ready\n")

        class Metrics(tornado.web.RequestHandler):
            def get(self) -> None:
                self.set_header("Content-Type", CONTENT_TYPE_LATEST)
                self.finish(generate_latest(registry_))

        def quiet(handler: tornado.web.RequestHandler) -> None:
            if handler.get_status() >= 500:
                log.warning("%s %s", handler.get_status(), handler._request_summary())

        self._app = tornado.web.Application(
            [("/healthz", Health), ("/readyz", Ready), ("/metrics", Metrics)], log_function=quiet
        )
        self._server: Any = None
        self.port = 0

    async def listen(self, host: str, port: int) -> int:
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        sockets = bind_sockets(port, host)
        self._server = HTTPServer(self._app)
        self._server.add_sockets(sockets)
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


async def serve(
    name: str,
    settings: S,
    factory: Factory[S],
    *,
    health: HealthAddress[S] | None = None,
    stop_timeout: float = 30.0,
    registry: CollectorRegistry | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Run one component in this event loop until stopped (see the module doc). Raises the
    component's error when it failed."""
    from prometheus_client import CollectorRegistry

    loop = asyncio.get_running_loop()
    fleet = fleet_of(settings)
    runtime = Runtime(name, fleet, fleet.clock(), registry or CollectorRegistry())
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, runtime.stop)
    started = False
    endpoint: HealthEndpoint | None = None
    component: Component | None = None
    try:
        component = factory(settings, runtime)
        address = health(settings) if health is not None else None
        if address is not None:
            built = component
            endpoint = HealthEndpoint(lambda: _is_ready(built, started), runtime.registry)
            port = await endpoint.listen(*address)
            if on_listening is not None:
                on_listening(port)
        await component.start()
        started = True
        log.info("%s started", name)
        await runtime.stopping.wait()
        log.info("%s stopping%s", name, f" ({runtime.error})" if runtime.error else "")
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
        if component is not None:
            try:
                await asyncio.wait_for(component.stop(), stop_timeout)
            except TimeoutError:
                log.error("%s did not stop within %.0f s", name, stop_timeout)
        if endpoint is not None:
            await endpoint.close()
    if runtime.error is not None:
        raise runtime.error


def settle_heap(young: int = 0) -> None:
    """Once a service process has started: collect, then move everything alive (modules,
    pools, catalogs, the server) to the collector's permanent generation (``gc.freeze``), so
    that the collections its traffic sets off walk what was made since, not the whole start-up
    heap each time; with ``young`` > 0, also collect the young generation every ``young``
    allocations instead of 700. Process-wide: for a process's entry point (or a benchmark
    standing in for one), never a library or a test."""
    gc.collect()
    gc.freeze()
    if young > 0:
        gc.set_threshold(young, *gc.get_threshold()[1:])


def run_loop(
    name: str,
    main: Callable[[], Coroutine[Any, Any, None]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``main()`` in a fresh event loop: 0 when it returns, 1 with one line on stderr when
    it raises FleetError, OSError or one of ``expected`` (a traceback for anything else)."""
    catch: tuple[type[BaseException], ...] = (FleetError, OSError, *expected)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    except catch as exc:
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130
    return 0


def start_up(name: str, source: type[S] | Callable[[], S]) -> S | None:
    """Settings and logging: the settings, or None after one line on stderr naming the bad
    variable (the caller exits with status 2)."""
    try:
        settings = load_settings(source)
    except SettingsError as exc:
        print(f"{name}: bad configuration: {exc}", file=sys.stderr, flush=True)
        return None
    fleet = fleet_of(settings)
    configure_logging(fleet.log_level, fleet.log_json)
    return settings


def run_service(
    name: str,
    source: type[S] | Callable[[], S],
    factory: Factory[S],
    *,
    health: HealthAddress[S] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    stop_timeout: float = 30.0,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """The whole life of a one-process service; returns the process exit status."""
    settings = start_up(name, source)
    if settings is None:
        return 2
    loaded: S = settings

    def main() -> Coroutine[Any, Any, None]:
        return serve(name, loaded, factory, health=health, stop_timeout=stop_timeout)

    return run_loop(name, main, loop_factory=loop_factory, expected=expected)


__all__ = [
    "Component",
    "HealthEndpoint",
    "Runtime",
    "fleet_of",
    "load_settings",
    "run_loop",
    "run_service",
    "serve",
    "settle_heap",
    "start_up",
]
