"""Small helpers for the external processes the fleet starts on one machine (memcached)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time

from fleet.errors import FleetError


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts connections on ``host:port``; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.02)
    return False


class MemcachedProcess:
    """A memcached on loopback: ``start()``, ``stop()``, ``kill()`` (as a crash would)."""

    def __init__(self, port: int, memory_mb: int = 256, binary: str | None = None) -> None:
        found = binary or shutil.which("memcached")
        if found is None:
            raise FleetError("memcached is not installed (apt-get install memcached)")
        self.binary = found
        self.port = port
        self.memory_mb = memory_mb
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("memcached") is not None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        args = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        args += ["-m", str(self.memory_mb), "-c", "4096", "-t", "2"]
        args += ["-u", "nobody"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_for_port("127.0.0.1", self.port, timeout):
            self.kill()
            raise FleetError(f"memcached did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._close_pipes()
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self._close_pipes()
            self.process = None

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
