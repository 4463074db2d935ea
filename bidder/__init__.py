"""The bidder: the OpenRTB endpoint's pure core (request model, bid pipeline, response).

The service (``bidder.service``) wires ``bidder.pipeline.Pipeline`` to HTTP, caches, buses and
metrics. This package exports nothing itself: importing one module (``bidder.openrtb``,
``bidder.scorer``) loads that module and what it needs, not the whole pipeline.
"""
