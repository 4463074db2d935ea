"""pacing.gate: the pure pacing library (plan, controller, leases, in-flight ledger, gate).

The only part of ``pacing`` the bidder imports. No I/O, no clock, no globals: time, randomness
and settings are arguments.
"""

from __future__ import annotations

from fleet.plan import (
    DayPlan,
    Profile,
    day_budget,
    learn_profile,
    local_day,
    make_plan,
    zone,
)
from pacing.gate.controller import (
    Controller,
    MultiplicativeThrottle,
    PIThrottle,
    ThrottleState,
)
from pacing.gate.decision import ALLOW, REASONS, Gate, GateSettings, worst_cost
from pacing.gate.leases import (
    Allocation,
    CampaignPacing,
    HolderLeases,
    HolderReport,
    HolderView,
    Lease,
    PacingState,
    allocate,
)
from pacing.gate.ledger import Ledger, LedgerSettings, expected_cost

__all__ = [
    "ALLOW",
    "REASONS",
    "Allocation",
    "CampaignPacing",
    "Controller",
    "DayPlan",
    "Gate",
    "GateSettings",
    "HolderLeases",
    "HolderReport",
    "HolderView",
    "Lease",
    "Ledger",
    "LedgerSettings",
    "MultiplicativeThrottle",
    "PIThrottle",
    "PacingState",
    "Profile",
    "ThrottleState",
    "allocate",
    "day_budget",
    "expected_cost",
    "learn_profile",
    "local_day",
    "make_plan",
    "worst_cost",
    "zone",
]
