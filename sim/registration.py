"""The simulator's commands, as ``rtbfleet`` knows them (see fleet.registry).

Imports nothing but the registry: the command line loads the simulator only to run one of these.
"""

from fleet.registry import Command

COMMANDS = (
    Command(
        path=("demo",),
        help="run the fleet against the exchange simulator, with a report",
        arguments="sim.demo:add_arguments",
        run="sim.demo:command",
        settings="sim.settings:SimSettings",
        long_running=True,
    ),
    Command(
        path=("campaigns", "generate"),
        help="a synthetic portfolio for demos and benchmarks",
        arguments="sim.commands:generate_arguments",
        run="sim.commands:campaigns_generate",
    ),
)
