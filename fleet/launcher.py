"""Runs a whole fleet on one machine as supervised child processes (``rtbfleet up``).

Order of start: Postgres (embedded unless a DSN is given) and its migrations, memcached (when its
binary is found and the configured address is on this machine), the two bus proxies, then every
registered service (``fleet.registry``) whose package is installed, in its declared order. Each
child gets its settings through ``RTBFLEET_*`` variables (every service's port and URL among
them, so that services find each other), has its output prefixed with its name, and is restarted
with back-off when it crashes. Shutdown runs
in reverse: services first (they stop accepting and flush), then proxies, memcached, Postgres.
Children run in their own sessions (a Ctrl-C reaches only the launcher, which stops them in order)
and die with the launcher if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fleet import registry
from fleet.aio import cancel_and_wait
from fleet.db import migrate
from fleet.errors import FleetError, SettingsError
from fleet.pg import LocalPostgres
from fleet.processes import MemcachedProcess, wait_for_port
from fleet.registry import Service
from fleet.settings import FleetSettings, positive, setting

log = logging.getLogger("fleet.launcher")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class LauncherSettings:
    """What ``rtbfleet up`` itself needs beyond FleetSettings."""

    ready_timeout: float = setting(
        90.0, "RTBFLEET_READY_TIMEOUT", "seconds to wait for services to be ready", positive
    )


@dataclass
class FleetHandle:
    """What a running fleet offers its user (the demo, tests, the banner of ``rtbfleet up``).

    ``urls`` maps each started service that has a port to its local base URL
    (``http://127.0.0.1:<port>``)."""

    data_dir: Path
    pg_dsn: str
    memcached: str
    event_bus_out: str
    coherence_bus_out: str
    urls: dict[str, str] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)
    processes: list[SupervisedProcess] = field(default_factory=list)

    def url(self, service: str) -> str:
        """The base URL of ``service``; FleetError when it has none in this fleet."""
        try:
            return self.urls[service]
        except KeyError:
            raise FleetError(f"no {service} is running in this fleet") from None


class SupervisedProcess:
    """One child process: output prefixed, restarted with back-off on a crash."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        output: TextIO | None,
        log_file: Path | None,
        restart: bool = True,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.output = output
        self.log_file = log_file
        self.restart = restart
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")
        await self._started.wait()

    async def _run(self) -> None:
        backoff = 0.5
        sink = self.log_file.open("a", buffering=1) if self.log_file else None
        try:
            while not self._stopping:
                started = time.monotonic()
                self.process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    env=self.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
                self._started.set()
                await self._pump(self.process, sink)
                code = await self.process.wait()
                if self._stopping or not self.restart:
                    break
                if time.monotonic() - started > 60:
                    backoff = 0.5
                log.warning("%s exited with %s; restarting in %.1fs", self.name, code, backoff)
                self.restarts += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        finally:
            self._started.set()
            if sink is not None:
                sink.close()

    async def _pump(self, process: asyncio.subprocess.Process, sink: TextIO | None) -> None:
        assert process.stdout is not None
        prefix = f"{self.name:>13} | "
        while True:
            line = await process.stdout.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            if sink is not None:
                sink.write(text + "\n")
            if self.output is not None:
                self.output.write(prefix + text + "\n")
                self.output.flush()

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; waits for the supervisor task."""
        self._stopping = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await cancel_and_wait(self._task)


def signing_key(data_dir: Path, configured: str) -> str:
    """The configured key, else one generated once and kept (mode 600) in the data directory."""
    if configured:
        return configured
    path = data_dir / "secrets" / "signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def embedded_postgres(data_dir: Path) -> LocalPostgres:
    """The embedded server of a data directory, on the port it already runs on if it runs."""
    directory = data_dir / "pg"
    pid_file = directory / "pgdata" / "postmaster.pid"
    running_port = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        running_port = int(pid_file.read_text().splitlines()[3])
    return LocalPostgres(directory, port=running_port)


def configured_dsn(settings: FleetSettings) -> str:
    """``RTBFLEET_PG_DSN``, else the DSN of the data directory's embedded Postgres, which must
    already run (``rtbfleet up`` runs it): what a service started on its own connects to."""
    if settings.pg_dsn:
        return settings.pg_dsn
    server = embedded_postgres(settings.data_dir.resolve())
    if not server.is_running():
        raise FleetError("no RTBFLEET_PG_DSN and the embedded Postgres is not running")
    return server.dsn


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


async def _wait_http_ok(url: str, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not alive():
            raise FleetError(f"{url}: the service exited before it was ready")
        try:
            status = await asyncio.to_thread(_http_status, url)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        await asyncio.sleep(0.2)
    raise FleetError(f"{url} not ready after {timeout:.0f}s ({last})")


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _service_port(service: Service, env: Mapping[str, str]) -> int:
    """The port of ``service``: its variable's value in ``env``, else its settings default."""
    assert service.port_setting is not None
    raw = env.get(service.port_setting)
    value: Any = service.default_of(service.port_setting) if raw is None else raw
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(service.port_setting, f"{value!r} is not a valid int") from None
    if not 0 < number <= 65535:
        raise SettingsError(service.port_setting, f"{number} must be a TCP port (1-65535)")
    return number


def _process_counts(
    chosen: tuple[Service, ...], processes: Mapping[str, int]
) -> dict[str, dict[str, str]]:
    """Per service name, the variables that set its process count."""
    by_name = {s.name: s for s in chosen}
    extra: dict[str, dict[str, str]] = {}
    for name, count in processes.items():
        target = by_name.get(name)
        if target is None:
            raise FleetError(f"--processes {name}={count}: no such service in this fleet")
        if target.processes_setting is None:
            raise FleetError(f"--processes {name}={count}: {name} runs as one process")
        if count < 0:
            raise FleetError(f"--processes {name}={count}: must be 0 (one per core) or more")
        extra[name] = {target.processes_setting: str(count)}
    return extra


@contextlib.asynccontextmanager
async def running_fleet(
    settings: FleetSettings,
    launcher: LauncherSettings | None = None,
    *,
    processes: Mapping[str, int] | None = None,
    env: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    quiet: bool = False,
    output: TextIO | None = None,
    services: tuple[Service, ...] | None = None,
) -> AsyncIterator[FleetHandle]:
    """Start everything, yield a handle once the services are ready, stop everything on exit.

    ``services`` defaults to every registered one (``fleet.registry``), started in their order.
    ``processes`` sets a service's process count (``{"name": N}``; its registration names the
    variable). ``env`` adds variables for every child; a callable is called once Postgres and
    memcached are up, just before the first child starts (the demo sets the fleet clock then).
    ``quiet`` sends the children's output only to ``data_dir/logs/<name>.log`` (the demo draws
    its own display); otherwise it is also written, prefixed, to ``output`` (stderr).
    """
    from fleet.settings import load

    launcher = launcher or load(LauncherSettings)
    chosen = registry.order_services(registry.services() if services is None else services)
    counts = _process_counts(chosen, processes or {})
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    sink = None if quiet else (output or sys.stderr)
    children: list[SupervisedProcess] = []
    postgres: LocalPostgres | None = None
    memcached: MemcachedProcess | None = None
    try:
        base_env = {**os.environ, **(env if isinstance(env, Mapping) else {})}
        runnable = []
        for service in chosen:
            if service.available():
                runnable.append(service)
            else:
                log.warning(
                    "%s: %s.__main__ is not installed; not started", service.name, service.module
                )
        ports = {s.name: _service_port(s, base_env) for s in runnable if s.port_setting}
        urls = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}

        dsn = settings.pg_dsn
        if not dsn:
            postgres = embedded_postgres(data_dir)
            dsn = await asyncio.to_thread(postgres.start)
        await migrate(dsn)

        memcached_addr = settings.memcached
        servers = settings.memcached_servers
        if len(servers) == 1 and _is_local(servers[0][0]):
            host, mc_port = servers[0]
            if not await asyncio.to_thread(wait_for_port, host, mc_port, 0.2):
                if MemcachedProcess.available():
                    memcached = MemcachedProcess(mc_port)
                    await asyncio.to_thread(memcached.start)
                else:
                    log.warning("memcached not found: running without the L2 cache tier")
                    memcached_addr = ""

        shared = dict(base_env)
        shared.update(
            {
                "RTBFLEET_DATA_DIR": str(data_dir),
                "RTBFLEET_PG_DSN": dsn,
                "RTBFLEET_MEMCACHED": memcached_addr,
                "RTBFLEET_SIGNING_KEY": signing_key(data_dir, settings.signing_key),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if callable(env):
            shared.update(env())
        # Every process learns every service's port and URL, so that they find each other.
        for service in runnable:
            if service.port_setting is not None:
                shared[service.port_setting] = str(ports[service.name])
            if service.url_setting is not None:
                shared[service.url_setting] = urls[service.name]
        python = sys.executable
        for name, inside, outside in (
            ("event-bus", settings.event_bus_in, settings.event_bus_out),
            ("coherence-bus", settings.coherence_bus_in, settings.coherence_bus_out),
        ):
            argv = [python, "-m", "fleet.proxy", "--in", inside, "--out", outside]
            child = SupervisedProcess(name, argv, shared, sink, logs / f"{name}.log")
            await child.start()
            children.append(child)

        started: list[tuple[Service, SupervisedProcess]] = []
        for service in runnable:
            argv = [python, "-m", service.module, *service.args]
            child_env = {**shared, **service.env, **counts.get(service.name, {})}
            child = SupervisedProcess(
                service.name, argv, child_env, sink, logs / f"{service.name}.log"
            )
            await child.start()
            children.append(child)
            started.append((service, child))
        for service, child in started:
            if service.health_path is not None:
                url = urls[service.name] + service.health_path
                proc = child

                def alive(p: SupervisedProcess = proc) -> bool:
                    return p.process is not None and (
                        p.process.returncode is None or p.restarts < 3
                    )

                await _wait_http_ok(url, launcher.ready_timeout, alive)

        yield FleetHandle(
            data_dir=data_dir,
            pg_dsn=dsn,
            memcached=memcached_addr,
            event_bus_out=settings.event_bus_out,
            coherence_bus_out=settings.coherence_bus_out,
            urls={s.name: urls[s.name] for s, _ in started if s.name in urls},
            services=[s.name for s, _ in started],
            processes=children,
        )
    finally:
        # Reverse order, and shielded: a second Ctrl-C must not leave children behind.
        await asyncio.shield(_shutdown(children, memcached, postgres))


async def _shutdown(
    children: list[SupervisedProcess],
    memcached: MemcachedProcess | None,
    postgres: LocalPostgres | None,
) -> None:
    for child in reversed(children):
        try:
            await child.stop()
        except Exception:  # keep stopping the rest
            log.exception("stopping %s failed", child.name)
    if memcached is not None:
        await asyncio.to_thread(memcached.stop)
    if postgres is not None:
        await asyncio.to_thread(postgres.stop)
