"""The exchange simulator: synthetic SSP traffic with known ground truth, auctions, notices,
conversions and the report that says how the fleet did.

``sim.demo`` is the ``rtbfleet demo`` command and ``sim.commands`` is ``rtbfleet campaigns
generate``, both registered in ``sim.registration``. ``vocabulary`` (what the synthetic market
speaks of) and ``portfolio`` (synthetic portfolios from a seed) serve demos, benchmarks and tests
only. The rest, by concept:

- pure cores (no sockets, no clock; RNGs passed in): ``population`` and ``market`` (the synthetic
  market and its TRUE click/install probabilities and competing prices), ``traffic`` (OpenRTB
  2.5/2.6 requests and the open-loop schedule), ``tcf`` (TCF v2 consent strings), ``auction``
  (exchange rules and notice macros), ``notices`` (trackers in markup, user behaviour after a
  win, postback URLs), ``http1`` (HTTP/1.1 framing), ``ledger`` (the books), ``report`` and
  ``calibration`` (figures and the consistency check), ``summary`` (terminal text);
- adapters: ``httpclient`` (keep-alive asyncio client), ``exchange`` (sends requests, runs
  auctions), ``notifier`` (sends what follows them), ``fleetwatch`` (listens to the event bus),
  ``render`` (report.json, plots, HTML);
- ``bench``: how many requests per second the client can offer (``python -m sim.bench``).
"""

from sim.errors import HttpProtocolError, SimConfigError, SimError, TargetError
from sim.settings import SimSettings

__all__ = ["HttpProtocolError", "SimConfigError", "SimError", "SimSettings", "TargetError"]
