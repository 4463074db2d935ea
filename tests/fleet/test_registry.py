"""The registry: what packages declare, checked when declared, found through entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleet import registry
from fleet.registry import Command, RegistryError, Service, order_services


def test_this_installation_registers_its_services_and_commands() -> None:
    services = {s.name: s for s in registry.services()}
    assert {"bidder", "cache-watcher"} <= set(services)
    bidder = services["bidder"]
    assert (bidder.module, bidder.health_path, bidder.port_setting) == (
        "bidder",
        "/readyz",
        "RTBFLEET_BIDDER_PORT",
    )
    assert bidder.default_of("RTBFLEET_BIDDER_PORT") == 8080  # from BidderSettings, not here
    assert services["cache-watcher"].args == ("watcher",)
    order = [s.name for s in registry.services()]
    assert order.index("cache-watcher") < order.index("bidder")
    names = {c.name for c in registry.commands()}
    assert {"demo", "campaigns generate"} <= names


def test_discovery_imports_no_service_code() -> None:
    """Reading the registry loads the registration modules (and their packages' __init__),
    not the services' settings, wiring or main code."""
    code = (
        "import sys; from fleet import registry; registry.services(); registry.commands(); "
        "heavy = [m for m in ('bidder.settings', 'bidder.service', 'bidder.__main__', "
        "'cache.settings', 'cache.watcher', 'cache.__main__', 'sim.demo', 'sim.market', "
        "'sim.commands') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_kernel_s_command_line_loads_no_service() -> None:
    code = (
        "import sys, fleet.cli, fleet.launcher, fleet.service; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'bidder', 'cache', 'sim', 'tracker', 'pacing', 'learner', 'bidlogger'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "Bidder"}, "name must be"),
        ({"module": "not a module"}, "is not a module name"),
        ({"settings": "bidder.settings.BidderSettings"}, "is not 'package.module:Class'"),
        ({"port_setting": "BIDDER_PORT"}, "is not an RTBFLEET_* variable"),
        ({"health_path": "/readyz"}, "needs a leading '/' and a port_setting"),
        ({"url_setting": "RTBFLEET_X_URL"}, "url_setting needs a port_setting"),
        ({"env": {"PATH": "/tmp"}}, "env may only hold RTBFLEET_* variables"),
    ],
)
def test_a_bad_registration_fails_where_it_is_declared(
    kwargs: dict[str, object], problem: str
) -> None:
    fields: dict[str, object] = {"name": "x", "module": "x"}
    fields.update(kwargs)
    with pytest.raises(RegistryError, match="service") as caught:
        Service(**fields)  # type: ignore[arg-type]
    assert problem in str(caught.value)


def test_a_service_with_extra_variables_is_still_a_value() -> None:
    a = Service(name="x", module="x", env={"RTBFLEET_X_MODE": "fast"})
    b = Service(name="x", module="x", env={"RTBFLEET_X_MODE": "fast"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


def test_services_run_in_order_and_a_name_is_registered_once() -> None:
    a = Service(name="late", module="a", order=90)
    b = Service(name="early", module="b", order=10)
    c = Service(name="also-early", module="c", order=10)
    assert [s.name for s in order_services([a, b, c])] == ["also-early", "early", "late"]
    with pytest.raises(RegistryError, match="registered twice: late"):
        order_services([a, Service(name="late", module="z")])


def test_a_command_names_one_or_two_words_and_its_code_by_reference() -> None:
    assert Command(path=("campaigns", "generate"), help="", run="m:f").name == "campaigns generate"
    with pytest.raises(RegistryError):
        Command(path=("a", "b", "c"), help="", run="m:f")
    with pytest.raises(RegistryError):
        Command(path=("demo",), help="", run="sim.demo.run")


def test_a_reference_that_does_not_resolve_is_one_clear_error() -> None:
    broken = Service(name="ghost", module="ghost", settings="ghost.settings:GhostSettings")
    with pytest.raises(RegistryError, match=r"cannot import ghost\.settings"):
        broken.settings_class()
    assert not broken.available()
    with pytest.raises(RegistryError, match="unknown service 'ghost'"):
        registry.service("ghost")
