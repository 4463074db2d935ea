"""The bid logger, as ``rtbfleet up`` and ``rtbfleet run bidlogger`` know it (see fleet.registry).

Imports nothing but the registry: the kernel reads this without loading the bid logger. One
process holds every partition by default; a fleet split into partition sets runs one process
per set (``RTBFLEET_BIDLOGGER_PARTITIONS``), as deploy/ does.
"""

from fleet.registry import Service

SERVICE = Service(
    name="bidlogger",
    module="bidlogger",
    settings="bidlogger.settings:BidloggerSettings",
    health_path="/healthz",
    port_setting="RTBFLEET_BIDLOGGER_PORT",
    order=40,
    description="event-bus partitions to per-minute aggregates, raw samples and the creative feed",
)
