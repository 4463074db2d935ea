"""The services and commands of this installation, as their packages declare them.

A service package declares itself once, in a tiny module that imports nothing but this one, and
names it in its ``pyproject.toml``::

    # bidder/registration.py
    from fleet.registry import Service

    SERVICE = Service(name="bidder", module="bidder", settings="bidder.settings:BidderSettings",
                      health_path="/readyz", port_setting="RTBFLEET_BIDDER_PORT", order=90)

    # pyproject.toml
    [project.entry-points."rtbfleet.services"]
    bidder = "bidder.registration:SERVICE"

A package may add command-line commands the same way (group ``rtbfleet.commands``, an object
or a sequence of :class:`Command`). The kernel reads these entry points when a command asks for
them (``rtbfleet up``, ``run``, ``settings``), never at import time, and imports a service's
settings class or command code only when that is needed (``rtbfleet settings`` lists every
variable; ``rtbfleet demo`` imports the simulator). Nothing here names a service.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.errors import FleetError

SERVICES_GROUP = "rtbfleet.services"
COMMANDS_GROUP = "rtbfleet.commands"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_VARIABLE = re.compile(r"^RTBFLEET_[A-Z0-9_]+$")


class RegistryError(FleetError):
    """A registration that cannot be used: the message names the entry point and the reason."""


def _import_object(reference: str) -> Any:
    """The object named ``"package.module:attribute"``."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not _MODULE.match(module_name) or not attribute:
        raise RegistryError(f"{reference!r} is not of the form 'package.module:Name'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"{reference}: cannot import {module_name} ({exc})") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise RegistryError(f"{reference}: {module_name} has no {attribute}") from None
    return target


@dataclass(frozen=True)
class Service:
    """One service: how ``rtbfleet up`` and ``rtbfleet run`` start it, and what it reads.

    ``module`` runs as ``python -m module *args``. ``settings`` names its frozen settings class
    ("pkg.mod:Class"); it is imported only to list variables or to read a default. The launcher
    polls ``http://127.0.0.1:<port><health_path>`` for 200 before it calls the fleet up, where
    the port is ``port_setting``'s value (the environment's, else the settings class default).
    ``url_setting``, when given, is the variable through which other services find this one:
    the launcher sets it to the local base URL for every process it starts. ``processes_setting``
    is the variable that ``rtbfleet up --processes NAME=N`` sets. ``env`` adds variables for
    this service's process only. Services start in ``order`` (then by name) and stop in
    reverse.
    """

    name: str
    module: str
    settings: str = ""
    health_path: str | None = None
    port_setting: str | None = None
    url_setting: str | None = None
    processes_setting: str | None = None
    order: int = 50
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append("name must be 1-40 of a-z, 0-9 and '-', starting with a letter")
        if not _MODULE.match(self.module):
            problems.append(f"module {self.module!r} is not a module name")
        if self.settings and ":" not in self.settings:
            problems.append(f"settings {self.settings!r} is not 'package.module:Class'")
        for label in ("port_setting", "url_setting", "processes_setting"):
            value = getattr(self, label)
            if value is not None and not _VARIABLE.match(value):
                problems.append(f"{label} {value!r} is not an RTBFLEET_* variable")
        if self.health_path is not None and (
            not self.health_path.startswith("/") or self.port_setting is None
        ):
            problems.append("health_path needs a leading '/' and a port_setting")
        if self.url_setting is not None and self.port_setting is None:
            problems.append("url_setting needs a port_setting")
        if any(not _VARIABLE.match(k) for k in self.env):
            problems.append("env may only hold RTBFLEET_* variables")
        if problems:
            raise RegistryError(f"service {self.name!r}: {'; '.join(problems)}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", dict(self.env))

    def available(self) -> bool:
        """Whether ``python -m module`` can run in this installation."""
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except (ImportError, ValueError):
            return False

    def settings_class(self) -> type[Any] | None:
        """The settings class, imported now; None when the service declares none."""
        return _settings_class(f"service {self.name!r}", self.settings)

    def default_of(self, variable: str) -> Any:
        """The settings class default of ``variable``."""
        cls = self.settings_class()
        for f in dataclasses.fields(cls) if cls is not None else ():
            if f.metadata.get("env") == variable:
                return f.default
        raise RegistryError(f"service {self.name!r}: its settings have no {variable}")


def _settings_class(owner: str, reference: str) -> type[Any] | None:
    if not reference:
        return None
    cls = _import_object(reference)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise RegistryError(f"{owner}: {reference} is not a settings dataclass")
    return cls


CommandRun = Callable[[Any, argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A command a package adds: ``rtbfleet <path...>``.

    ``path`` is one word, or two: a group of the kernel's (``campaigns``) or of the
    packages' (``learner``, made by the first command that names it), then the command.
    ``arguments`` ("pkg.mod:function") adds the command's options to its argparse parser and
    ``run`` ("pkg.mod:function") runs it as ``run(fleet_settings, args) -> exit status``; both
    are imported only when the command is the one being run (or asked for ``--help``).
    ``long_running`` commands log at the configured level; others only warnings. ``settings``
    ("pkg.mod:Class") is listed by ``rtbfleet settings``.
    """

    path: tuple[str, ...]
    help: str
    run: str
    arguments: str = ""
    settings: str = ""
    long_running: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))
        if not 1 <= len(self.path) <= 2 or not all(_NAME.match(w) for w in self.path):
            raise RegistryError(f"command {self.path!r}: one or two lower-case words")
        for label in ("run", "arguments"):
            value = getattr(self, label)
            if (value or label == "run") and ":" not in value:
                raise RegistryError(f"command {self.name!r}: {label} must be 'pkg.mod:function'")

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def settings_class(self) -> type[Any] | None:
        return _settings_class(f"command {self.name!r}", self.settings)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if self.arguments:
            _import_object(self.arguments)(parser)

    def runner(self) -> CommandRun:
        run = _import_object(self.run)
        if not callable(run):
            raise RegistryError(f"command {self.name!r}: {self.run} is not callable")
        return run  # type: ignore[no-any-return]


def _entries(group: str) -> list[tuple[str, Any]]:
    """(entry point name, loaded object) for every entry point of ``group``, by name."""
    found: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on the path: the first wins
            continue
        seen.add(ep.name)
        try:
            found.append((ep.name, ep.load()))
        except (ImportError, AttributeError) as exc:
            raise RegistryError(f"entry point {group} {ep.name} = {ep.value}: {exc}") from None
    return found


def _flatten(label: str, value: Any, kind: type[Any]) -> list[Any]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, kind):
            raise RegistryError(f"entry point {label}: {item!r} is not a {kind.__name__}")
    return items


def order_services(services: Iterable[Service]) -> tuple[Service, ...]:
    """In start order; RegistryError when two share a name."""
    ordered = sorted(services, key=lambda s: (s.order, s.name))
    names = [s.name for s in ordered]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RegistryError(f"services registered twice: {', '.join(duplicates)}")
    return tuple(ordered)


@functools.cache
def services() -> tuple[Service, ...]:
    """Every registered service, in start order."""
    found: list[Service] = []
    for name, value in _entries(SERVICES_GROUP):
        found.extend(_flatten(f"{SERVICES_GROUP} {name}", value, Service))
    return order_services(found)


@functools.cache
def commands() -> tuple[Command, ...]:
    """Every registered command, by name; RegistryError when two claim the same words."""
    found: list[Command] = []
    for name, value in _entries(COMMANDS_GROUP):
        found.extend(_flatten(f"{COMMANDS_GROUP} {name}", value, Command))
    names = [c.name for c in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RegistryError(f"commands registered twice: {', '.join(duplicates)}")
    return tuple(sorted(found, key=lambda c: c.path))


def service(name: str) -> Service:
    """The registered service called ``name``; RegistryError naming the known ones."""
    for s in services():
        if s.name == name:
            return s
    known = ", ".join(s.name for s in services()) or "none"
    raise RegistryError(f"unknown service {name!r} (registered: {known})")


def clear_cache() -> None:
    """Forget what was discovered (tests that install a package on the fly)."""
    services.cache_clear()
    commands.cache_clear()


__all__ = [
    "COMMANDS_GROUP",
    "SERVICES_GROUP",
    "Command",
    "RegistryError",
    "Service",
    "clear_cache",
    "commands",
    "order_services",
    "service",
    "services",
]
