"""The pacer, as ``rtbfleet up`` and ``rtbfleet run pacing`` know it (see fleet.registry).

Imports nothing but the registry: the kernel reads this without loading the pacer. It starts
after the cache watcher and before the bidders, so that leases are being granted by the time a
bidder is ready (a bidder without a lease does not spend on a budgeted campaign)."""

from fleet.registry import Service

SERVICE = Service(
    name="pacing",
    module="pacing",
    settings="pacing.settings:PacerServiceSettings",
    order=20,
    description="pacer: spend plans, throttles and spend leases for the bidders",
)
