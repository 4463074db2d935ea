"""The bidder, as ``rtbfleet up`` and ``rtbfleet run bidder`` know it (see fleet.registry).

Imports nothing but the registry: the kernel reads this without loading the bidder."""

from fleet.registry import Service

SERVICE = Service(
    name="bidder",
    module="bidder",
    settings="bidder.settings:BidderSettings",
    health_path="/readyz",
    port_setting="RTBFLEET_BIDDER_PORT",
    processes_setting="RTBFLEET_BIDDER_PROCESSES",
    order=90,
    description="OpenRTB bid endpoint (POST /openrtb2/bid)",
)
