"""A Postgres server that lives in a directory of ours: the embedded default and the test fixture.

Uses the Postgres binaries on PATH (or in the usual Debian location) when present, else the
``pgserver`` package's bundled build. Postgres refuses to run as root, so as root the server runs
as the unprivileged ``postgres`` user (created when missing) and its directory is handed to it.
The data stays in the directory across restarts; only loopback is listened on.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any

from fleet.errors import DatabaseError
from fleet.processes import free_port, wait_for_port

__all__ = ["LocalPostgres", "find_binaries", "free_port"]

log = logging.getLogger("fleet.pg")

PG_USER = "postgres"


def find_binaries() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        if all((directory / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _service_user() -> pwd.struct_passwd | None:
    """The user to run Postgres as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_USER)


class LocalPostgres:
    """``start()`` initialises the directory on first use and returns a DSN; ``stop()`` stops it."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        self._pgserver: Any = None
        self._bin = find_binaries()

    @property
    def dsn(self) -> str:
        if self._pgserver is not None:
            return str(self._pgserver.get_uri())
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Postgres tool, as the service user when we are root (they refuse root)."""
        user = _service_user()
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        try:
            return subprocess.run(
                args, check=check, capture_output=True, text=True, cwd=self.directory, **kwargs
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise DatabaseError(
                f"{Path(args[0]).name} failed: {detail[-1] if detail else exc}"
            ) from exc

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        user = _service_user()
        if user is not None:
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            # The service user must be able to reach the directory.
            for parent in self.directory.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    raise DatabaseError(
                        f"{parent} is not searchable by the {PG_USER} user; "
                        "choose a data directory outside it"
                    )

    def start(self, timeout: float = 60.0) -> str:
        if self._bin is None:
            return self._start_pgserver()
        self._prepare_directory()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
            conf = self.pgdata / "postgresql.conf"
            with conf.open("a") as f:
                f.write(
                    "\n# rtbfleet embedded defaults\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "max_connections = 200\n"
                    "shared_buffers = 128MB\n"
                    "fsync = on\n"
                    "synchronous_commit = off\n"
                )
        if self.is_running():
            return self.dsn
        self._run(
            [
                str(self._bin / "pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(timeout)),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.directory / "postgres.log"),
                "-o",
                f"-p {self.port} -k {self.directory}",
            ]
        )
        self._wait_accepting(timeout)
        log.info("embedded Postgres running on 127.0.0.1:%d (%s)", self.port, self.pgdata)
        return self.dsn

    def _wait_accepting(self, timeout: float) -> None:
        if not wait_for_port("127.0.0.1", self.port, timeout):
            raise DatabaseError(f"Postgres did not accept connections on port {self.port}")

    def is_running(self) -> bool:
        if self._bin is None or not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._run([str(self._bin / "pg_ctl"), "status", "-D", str(self.pgdata)], False)
        return result.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        if self._pgserver is not None:
            self._pgserver.cleanup()
            self._pgserver = None
            return
        if self.is_running():
            assert self._bin is not None
            self._run([str(self._bin / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.pgdata)])

    def kill(self) -> None:
        """Stop at once, as a crash would (immediate mode: no checkpoint)."""
        self.stop(mode="immediate")

    def _start_pgserver(self) -> str:
        try:
            import pgserver
        except ImportError as exc:
            raise DatabaseError(
                "no Postgres binaries on PATH and the pgserver package is not installed"
            ) from exc
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pgserver = getattr(pgserver, "get_server")(self.pgdata, cleanup_mode="stop")  # noqa: B009
        return self.dsn
