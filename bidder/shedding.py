"""Overload shedding: answer a request with an immediate no-bid, before parsing it, when it has
probably waited too long already.

A single-threaded server that takes more work than it can do answers everything late. What
tells overload is how long requests wait before the loop reads them (their sojourn time, as
CoDel has it for packets): a request that has waited longer than ``max_wait`` is shed, the rest
are served. Under overload every loop iteration then serves for about ``max_wait`` and sheds
the rest of what is ready, cheaply, so the queue stays short and the server spends nearly all
its time bidding; there is no shed probability to tune and nothing to swing between idle and
late. Too many requests in flight at once also sheds.

The wait is estimated from the event-loop lag probe (``LagProbe``), which runs at the start of
an iteration: a request read now was ready at the latest when this iteration began (when the
probe last ran) and at the earliest when the previous one began (``lag + interval`` before
that). ``staleness`` is that earliest bound, for deadlines (never answer after tmax);
``expected_wait`` takes the middle, for shedding. Both lean high: measured against the send
times of a load generator, the bound never fell short of a real wait, and under twice the load
the middle estimate ran about twice the real median wait, by an amount that depends on the
traffic. So the threshold calibrates itself against the loop thread's utilisation (CPU time
over wall time, reported by the probe): shedding while the loop has idle time is too eager,
and the threshold rises towards ``max_wait_ceiling``; otherwise it returns to ``max_wait``.

``LoadShedder`` is a pure core: times, lag and CPU time are passed in; no clock, no loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fleet.aio import cancel_and_wait

SHED_LAG: Final = "lag"
SHED_IN_FLIGHT: Final = "in_flight"


@dataclass(frozen=True)
class SheddingPolicy:
    enabled: bool = True
    max_wait: float = 0.015  # seconds a request may have waited unread before it is shed...
    max_wait_ceiling: float = 0.050  # ...raised up to this while shedding leaves the loop idle
    target_busy: float = 0.95  # loop utilisation below which shedding is judged too eager
    adapt_rate: float = 2.0  # relative change of the threshold per second
    busy_smoothing: float = 0.1  # time constant of the utilisation average, seconds
    max_in_flight: int = 1000
    probe_interval: float = 0.002  # seconds between lag probes
    share_smoothing: float = 0.001  # weight of one request in the running shed share


class LoadShedder:
    """Decides, per request and before parsing it, whether to shed it.

    Invariants: with shedding disabled ``admit`` refuses nothing; ``lag`` is the last lag the
    probe observed; ``share`` is a running average of the shed decisions; ``busy`` a running
    average of the loop thread's utilisation; ``policy.max_wait <= threshold <=
    policy.max_wait_ceiling``.
    """

    __slots__ = ("busy", "lag", "last_probe", "next_probe", "policy", "share", "threshold")

    def __init__(self, policy: SheddingPolicy) -> None:
        self.policy = policy
        self.lag = 0.0
        self.share = 0.0
        self.busy = 0.0
        self.threshold = policy.max_wait
        self.last_probe = float("inf")  # when the probe last ran (monotonic seconds)
        self.next_probe = float("inf")  # when its timer is due next

    def expect_probe(self, at: float, now: float) -> None:
        self.last_probe, self.next_probe = now, at

    def observe_lag(self, lag: float, cpu: float | None = None) -> None:
        """One probe: how late its timer fired and, when known, the CPU time the loop's thread
        used since the last probe (seconds). The wait estimate leans high by an amount that
        depends on the traffic, so the threshold calibrates itself: while requests are being
        shed and yet the loop has idle time, shedding is too eager and the threshold rises
        (up to the ceiling); otherwise it returns towards ``max_wait``."""
        self.lag = lag = max(0.0, lag)
        if cpu is None:
            return
        policy = self.policy
        elapsed = policy.probe_interval + lag
        weight = min(1.0, elapsed / policy.busy_smoothing)
        self.busy += (min(1.0, cpu / elapsed) - self.busy) * weight
        step = min(1.0, policy.adapt_rate * elapsed)
        if self.share > 0.01 and self.busy < policy.target_busy:
            self.threshold = min(policy.max_wait_ceiling, self.threshold * (1.0 + step))
        else:
            self.threshold += (policy.max_wait - self.threshold) * step

    def staleness(self, now: float) -> float:
        """How long a request read ``now`` may have waited unseen, at most: since the start of
        the previous loop iteration. On an idle loop that is at most two probe intervals;
        after a stall it covers the stall."""
        if now < self.last_probe:  # no probe yet (or a clock from another origin)
            return 0.0
        return (now - self.last_probe) + self.lag + self.policy.probe_interval

    def expected_wait(self, now: float) -> float:
        """The middle of the window the request became ready in (see the module docstring)."""
        if now < self.last_probe:
            return 0.0
        return (now - self.last_probe) + (self.lag + self.policy.probe_interval) / 2

    def admit(self, in_flight: int, now: float) -> str | None:
        """None to serve the request, else the reason to shed it (``lag`` or ``in_flight``)."""
        policy = self.policy
        if not policy.enabled:
            return None
        reason = None
        if in_flight >= policy.max_in_flight:
            reason = SHED_IN_FLIGHT
        elif self.expected_wait(now) > self.threshold:
            reason = SHED_LAG
        self.share += ((reason is not None) - self.share) * policy.share_smoothing
        return reason


class LagProbe:
    """A timer every ``interval`` seconds reporting to ``observe(lag, cpu)`` how late it fired and
    the CPU time its thread (the loop's) used since the last report, and, each time it runs,
    when it is due next to ``expect(due, now)``.

    Owned by the service: ``start()`` in the running loop, ``await stop()`` on shutdown.
    """

    def __init__(
        self,
        interval: float,
        observe: Callable[[float, float], None],
        clock: Callable[[], float] | None = None,
        expect: Callable[[float, float], None] | None = None,
    ) -> None:
        self.interval = interval
        self._observe = observe
        self._expect = expect
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-probe")

    async def _run(self) -> None:
        # Not loop.time(): uvloop's is cached per iteration with millisecond resolution.
        clock = self._clock or time.monotonic
        cpu_before = time.thread_time()
        while True:
            now = clock()
            expected = now + self.interval
            if self._expect is not None:
                self._expect(expected, now)
            await asyncio.sleep(self.interval)
            late = clock() - expected
            cpu = time.thread_time()
            self._observe(late, cpu - cpu_before)
            cpu_before = cpu

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
