"""The tracker, as ``rtbfleet up`` and ``rtbfleet run tracker`` know it (see fleet.registry).

Imports nothing but the registry: the kernel reads this without loading the tracker. It starts
before the bidder, whose notice, impression and click URLs point at it."""

from fleet.registry import Service

SERVICE = Service(
    name="tracker",
    module="tracker",
    settings="tracker.settings:TrackerSettings",
    health_path="/readyz",
    port_setting="RTBFLEET_TRACKER_PORT",
    url_setting="RTBFLEET_TRACKER_URL",
    order=60,
    description="win, billing and loss notices, impression pixels, clicks and postbacks",
)
