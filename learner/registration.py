"""The learner, as ``rtbfleet up`` and ``rtbfleet run learner`` know it, and its commands (see
fleet.registry).

Imports nothing but the registry: the kernel reads this without loading the learner."""

from fleet.registry import Command, Service

SERVICE = Service(
    name="learner",
    module="learner",
    settings="learner.settings:LearnerSettings",
    health_path="/healthz",
    port_setting="RTBFLEET_LEARNER_PORT",
    order=70,
    description="online learning from the event bus; models to Postgres and the bidders",
)

COMMANDS = (
    Command(
        path=("learner", "train"),
        help="train offline from event files (JSON lines or Parquet) into a model file",
        arguments="learner.train:add_arguments",
        run="learner.train:command",
        settings="learner.settings:LearnerSettings",
    ),
    Command(
        path=("model", "show"),
        help="the newest stored model: size, market table, heaviest features by name",
        arguments="learner.commands:show_arguments",
        run="learner.commands:model_show",
    ),
)
