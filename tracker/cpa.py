"""Cost per activation, pure: spend divided by attributed activations, and the pause rule.

An activation is an attributed install, or the campaign's goal event when it names one. The rule
pauses a campaign or a creative whose cost per activation stays above its target by ``factor``
for ``rounds`` evaluations in a row once it has spent at least ``min_spend_micros``. With no
activation yet, spend above ``factor`` x target already means that the next activation could
not bring it under. Targets are the campaign's goal price (CPI and CPA campaigns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

Level = Literal["campaign", "creative"]
TARGETED_GOALS: Final = frozenset({"CPI", "CPA"})


@dataclass(frozen=True, slots=True)
class Rule:
    factor: float = 2.0
    min_spend_micros: int = 50_000_000
    rounds: int = 2

    def __post_init__(self) -> None:
        if self.factor < 1.0:
            raise ValueError("the CPA factor must be at least 1")
        if self.rounds < 1 or self.min_spend_micros < 0:
            raise ValueError("rounds must be at least 1 and the minimum spend not negative")


@dataclass(frozen=True, slots=True)
class Standing:
    """One campaign or creative at one evaluation."""

    level: Level
    entity_id: int
    campaign_id: int
    spend_micros: int  # campaign currency
    activations: int
    target_micros: int  # 0: no target (not a CPI/CPA campaign)
    status: str = "active"

    @property
    def cpa_micros(self) -> int | None:
        """Spend per activation, None before the first activation."""
        return self.spend_micros // self.activations if self.activations else None


@dataclass(frozen=True, slots=True)
class Pause:
    level: Level
    entity_id: int
    campaign_id: int
    reason: str


def over_target(s: Standing, rule: Rule) -> bool:
    if s.target_micros <= 0 or s.status != "active" or s.spend_micros < rule.min_spend_micros:
        return False
    # spend / max(activations, 1) > factor * target, in integers scaled by 1000
    limit = int(rule.factor * 1000) * s.target_micros * max(s.activations, 1)
    return s.spend_micros * 1000 > limit


def evaluate(
    standings: Iterable[Standing], streaks: Mapping[tuple[str, int], int], rule: Rule
) -> tuple[list[Pause], dict[tuple[str, int], int]]:
    """The pauses due now and the new streaks (evaluations in a row above target). A creative
    is not paused on its own when its campaign is paused in the same evaluation."""
    new_streaks: dict[tuple[str, int], int] = {}
    due: list[tuple[Standing, int]] = []
    for s in standings:
        key = (s.level, s.entity_id)
        if over_target(s, rule):
            n = streaks.get(key, 0) + 1
            new_streaks[key] = n
            if n >= rule.rounds:
                due.append((s, n))
    paused_campaigns = {s.entity_id for s, _ in due if s.level == "campaign"}
    pauses = []
    for s, n in due:
        if s.level == "creative" and s.campaign_id in paused_campaigns:
            continue
        cpa = s.cpa_micros
        shown = f"{cpa} micros" if cpa is not None else "no activation"
        pauses.append(
            Pause(
                s.level,
                s.entity_id,
                s.campaign_id,
                f"cost per activation {shown} after spending {s.spend_micros} micros is above "
                f"{rule.factor:g} x the target {s.target_micros} for {n} evaluations",
            )
        )
    return pauses, new_streaks
