"""Listens to the fleet's event bus during a run: the bidder's BidEvents (what the live model
predicted) and whatever the tracker and the rest of the fleet record (wins, billing, clicks,
installs). This is an adapter; the figures are computed in ``sim.report``/``sim.calibration``.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from fleet.aio import cancel_and_wait
from fleet.bus import Subscriber
from fleet.events import EVENT_TOPIC_PREFIX, BidEvent, BillingEvent, decode, event_type
from sim.calibration import Prediction
from sim.report import FleetRecords

log = logging.getLogger(__name__)


class FleetWatcher:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.records = FleetRecords()
        self._task: asyncio.Task[None] | None = None
        self._subscriber: Subscriber | None = None

    async def start(self) -> None:
        """Subscribe to every event topic; on failure the records say why."""
        subscriber = Subscriber(self.endpoint, prefixes=[EVENT_TOPIC_PREFIX])
        try:
            await subscriber.start()
        except Exception as exc:  # a BusError or a ZMQ error: report it, run without
            self.records.why = f"cannot subscribe to the event bus at {self.endpoint}: {exc}"
            await subscriber.close()
            return
        self._subscriber = subscriber
        self.records.connected = True
        self._task = asyncio.get_running_loop().create_task(self._run(subscriber))

    async def _run(self, subscriber: Subscriber) -> None:
        records = self.records
        async for delivery in subscriber:
            if delivery.kind == "gap":
                records.gaps += delivery.missed
                continue
            if delivery.kind != "data":
                continue
            for payload in delivery.payloads:
                try:
                    event = decode(payload)
                except msgspec.DecodeError:
                    records.events["undecodable"] += 1
                    continue
                records.events[event_type(event)] += 1
                if isinstance(event, BidEvent):
                    records.predictions.append(
                        Prediction(
                            txid=event.txid,
                            imp_id=event.imp_id,
                            campaign_id=event.campaign_id,
                            p_click=event.p_click,
                            p_install=event.p_install,
                            model_version=event.model_version,
                            p_win=event.p_win,
                            value_cpm_micros=event.value_cpm_micros,
                            bid_cpm_micros=event.bid_cpm_micros,
                        )
                    )
                elif isinstance(event, BillingEvent):
                    records.billed_cost_micros[event.campaign_id] += event.cost_micros

    async def close(self) -> None:
        """Let what is buffered arrive, then stop listening."""
        if self._task is not None:
            await asyncio.sleep(0.3)
            await cancel_and_wait(self._task)
        if self._subscriber is not None:
            await self._subscriber.close()
