"""scripts/ensure-system-deps, the first step of `make test` and `make run`, decides from the
machine it finds: here a PATH of our own making, with fake `apt-get` and `id`, so that every
case runs without touching the real system."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-system-deps"


class Machine:
    """A bin directory standing in for the machine: what is installed is what it holds."""

    def __init__(self, root: Path, *, uid: int = 0, apt: str | None = "works") -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.apt_log = root / "apt.log"
        for tool in ("bash", "mktemp", "rm", "chmod"):
            found = shutil.which(tool)
            assert found is not None, tool
            (self.bin / tool).symlink_to(found)
        self.tool("id", f'[ "$1" = -u ] && echo {uid}')
        self.tool("cc", "exit 0")
        self.tool("promtool", "exit 0")  # optional; a test takes it away
        if apt == "works":  # installing puts a memcached on the PATH
            self.tool(
                "apt-get",
                f'echo "$*" >> {self.apt_log}\n'
                f'case " $* " in *" install "*) printf "#!/bin/sh\\n" > {self.bin}/memcached; '
                f"chmod +x {self.bin}/memcached;; esac",
            )
        elif apt == "fails":
            self.tool("apt-get", f'echo "$*" >> {self.apt_log}\necho "E: no network" >&2; exit 100')

    def tool(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def run(self, mode: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "PYTHON": python,
            "HOME": os.environ.get("HOME", "/"),
            "TMPDIR": str(self.bin.parent),
        }
        return subprocess.run(
            [str(SCRIPT), mode], env=env, capture_output=True, text=True, timeout=60
        )

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


@pytest.mark.parametrize("mode", ["test", "run"])
def test_a_complete_machine_passes_silently(tmp_path: Path, mode: str) -> None:
    machine = Machine(tmp_path)
    machine.tool("memcached", "exit 0")
    result = machine.run(mode)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert machine.apt_calls() == []


def test_missing_memcached_is_installed_when_root_has_apt(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=0, apt="works")
    result = machine.run("test")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "installing: memcached\n"
    calls = machine.apt_calls()
    assert calls[0] == "update -qq"
    assert calls[1].startswith("install -y") and calls[1].endswith(" memcached")
    assert (machine.bin / "memcached").exists()


def test_without_root_it_stops_with_one_line_naming_the_package(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000)
    result = machine.run("test")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "install memcached" in lines[0] and "apt-get install memcached" in lines[0]
    assert machine.apt_calls() == []


def test_without_apt_get_it_stops_with_one_line(tmp_path: Path) -> None:
    machine = Machine(tmp_path, apt=None)
    (machine.bin / "cc").unlink()  # and no compiler either: both are named, on one line
    result = machine.run("test")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "memcached" in line and "gcc" in line


def test_a_failing_apt_get_stops_with_one_line(tmp_path: Path) -> None:
    machine = Machine(tmp_path, apt="fails")
    result = machine.run("test")
    assert result.returncode == 1
    installing, line = result.stderr.splitlines()
    assert installing == "installing: memcached"
    assert line.startswith("rtbfleet: apt-get could not install memcached")
    assert "E: no network" not in result.stderr  # apt's own output went to the file named


def test_make_run_goes_on_without_memcached_saying_so(tmp_path: Path) -> None:
    """`rtbfleet up` runs without the L2 tier when memcached is absent; `make run` may too."""
    machine = Machine(tmp_path, uid=1000)
    result = machine.run("run")
    assert result.returncode == 0
    (line,) = result.stderr.splitlines()
    assert "running without the L2 cache tier" in line


def test_make_run_still_needs_a_compiler(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000)
    machine.tool("memcached", "exit 0")
    (machine.bin / "cc").unlink()
    result = machine.run("run")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "gcc" in line


def test_a_python_without_headers_needs_python3_dev(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000)
    machine.tool("memcached", "exit 0")
    # A Python whose include directory lacks Python.h (Debian's without python3-dev).
    machine.tool("python3", 'case "$2" in *Python.h*) exit 1;; esac\nexit 0')
    result = machine.run("test", python=str(machine.bin / "python3"))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "install python3-dev" in line


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    result = Machine(tmp_path).run("deploy")
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.parametrize("apt", ["works", "fails"])
def test_missing_promtool_is_optional(tmp_path: Path, apt: str) -> None:
    machine = Machine(tmp_path, uid=0, apt=apt)
    machine.tool("memcached", "exit 0")
    (machine.bin / "promtool").unlink()
    result = machine.run("test")
    assert result.returncode == 0, result.stderr
    calls = machine.apt_calls()
    assert any(c.startswith("install -y") and c.endswith(" prometheus") for c in calls)
    if apt == "fails":
        assert result.stderr.startswith("rtbfleet: promtool is not installed")
        assert result.stderr.count("\n") == 1
    # make run does not need it
    assert "promtool" not in machine.run("run").stderr
