"""Controllers: the gap between planned and actual spend in, a throttle probability out.

Every ``step`` the pacer compares, per campaign, what the plan wanted spent in the last interval
with what was spent (committed + pending, so a 300 s billing delay does not look like
under-delivery), and sets the probability with which a bidder takes part in an auction it could
bid in. The spend lease caps the money either way; the throttle decides how evenly a bidder
spreads its allowance over the interval's traffic, instead of using it in the first second and
then sitting out.

Two controllers, both pure (state in, state out):

- :class:`MultiplicativeThrottle`, as in the production literature (Agarwal et al., "Budget
  pacing for targeted online advertisements at LinkedIn", KDD 2014; Xu et al., "Smart pacing",
  KDD 2015): the throttle is multiplied by the ratio of planned to actual spend rate, damped and
  clamped to ``[1 / max_step, max_step]`` per step. It works in ratios, so the same gain suits a
  campaign of 10 units a day and one of 10,000.
- :class:`PIThrottle`: proportional-integral on the relative rate error, with anti-windup.

Which one the pacer uses: the multiplicative throttle. In ``bench/pacing.py`` (16 bidders, a
compressed day, 20 % forecast error, budgets over three orders of magnitude) both keep
overdelivery at the lease bound, but the PI controller's fixed gains are right for only part of
the range of traffic-to-budget ratios: when a campaign needs a throttle of 1 % its proportional
term overshoots and the allowance, not the throttle, ends up doing the pacing (spend in bursts
at the start of each lease), while the multiplicative form adapts in ratios and keeps the share
of hours within +-20 % of plan higher. The bench prints both, so the choice can be re-checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ThrottleState:
    throttle: float = 1.0  # probability of bidding when allowed
    integral: float = 1.0  # PI only: the integral term (starts wide open, as the throttle)


class Controller(Protocol):
    def step(self, state: ThrottleState, planned: int, actual: int) -> ThrottleState:
        """``planned`` and ``actual``: micros in the last interval (``actual`` includes what
        was refused for want of allowance: that is spend the throttle let through)."""
        ...


@dataclass(frozen=True, slots=True)
class MultiplicativeThrottle:
    min_throttle: float = 1e-4
    max_step: float = 2.0  # at most x2 or /2 per step
    damping: float = 0.5  # exponent on the ratio: 1 jumps to the ratio, 0 never moves
    idle_ratio: float = 1.5  # planned spend with nothing spent: raise by this

    def step(self, state: ThrottleState, planned: int, actual: int) -> ThrottleState:
        p = state.throttle
        if planned <= 0:
            # Nothing due (ahead of plan or outside the flight): throttle down, keep a trickle.
            ratio = 1.0 / self.max_step if actual > 0 else 1.0
        elif actual <= 0:
            ratio = self.idle_ratio
        else:
            ratio = (planned / actual) ** self.damping
        ratio = min(max(ratio, 1.0 / self.max_step), self.max_step)
        return ThrottleState(min(1.0, max(self.min_throttle, p * ratio)))


@dataclass(frozen=True, slots=True)
class PIThrottle:
    """The textbook positional form: ``p = clamp(I + kp * e)``, ``I += ki * e`` with ``e`` the
    relative rate error in [-1, 1]; the integral stops at the rails (anti-windup)."""

    kp: float = 0.2
    ki: float = 0.05
    min_throttle: float = 1e-4

    def step(self, state: ThrottleState, planned: int, actual: int) -> ThrottleState:
        if planned <= 0:
            error = -1.0 if actual > 0 else 0.0
        else:
            error = max(-1.0, min(1.0, (planned - actual) / planned))
        integral = min(1.0, max(self.min_throttle, state.integral + self.ki * error))
        p = min(1.0, max(self.min_throttle, integral + self.kp * error))
        return ThrottleState(p, integral)
