"""The report's frequency check: no user shown a capped campaign more often than its cap.

The simulator knows every user and every impression it showed them (``Ledger.shown``); the fleet
only knows the user keys its privacy rules let it keep. A cap's period is the window of
``fleet.frequency``: it opens at the user's first impression of the campaign and lasts
``period_seconds`` (simulated seconds: the fleet clock runs with the simulation); the next
impression after it opens the next window. Every window of every user must hold at most the
cap's impressions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from fleet.frequency import period_end


class Capped(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def frequency_caps(self) -> tuple[tuple[int, int], ...]: ...


def most_in_a_window(times: Sequence[float], period_seconds: int) -> int:
    """The most impressions in one cap window, windows as ``fleet.frequency`` opens them."""
    most = count = 0
    end = float("-inf")
    for t in sorted(times):
        if t >= end:
            end, count = period_end(t, period_seconds), 0
        count += 1
        most = max(most, count)
    return most


def figures(
    shown: Mapping[tuple[int, int], Sequence[float]], plans: Iterable[Capped]
) -> dict[str, Any]:
    """Per capped campaign: users shown it, impressions, the most one user saw in a window,
    and how many users saw more than the cap."""
    caps = {p.id: p.frequency_caps for p in plans if p.frequency_caps}
    campaigns: dict[int, dict[str, Any]] = {
        cid: {"id": cid, "caps": [list(c) for c in cap], "users": 0, "impressions": 0,
              "most": 0, "over_cap_users": 0}
        for cid, cap in caps.items()
    }  # fmt: skip
    for (_, campaign_id), times in shown.items():
        entry = campaigns.get(campaign_id)
        if entry is None:
            continue
        entry["users"] += 1
        entry["impressions"] += len(times)
        over = False
        for max_impressions, period in caps[campaign_id]:
            most = most_in_a_window(times, period)
            entry["most"] = max(entry["most"], most)
            over = over or most > max_impressions
        entry["over_cap_users"] += over
    return {"campaigns": [campaigns[cid] for cid in sorted(campaigns)]}


def problems(found: Mapping[str, Any]) -> list[str]:
    out = []
    for c in found.get("campaigns", ()):
        if c["over_cap_users"]:
            caps = ", ".join(f"{m} per {p} s" for m, p in c["caps"])
            out.append(
                f"frequency: campaign {c['id']} shown to {c['over_cap_users']} user(s) more "
                f"often than its cap ({caps}); one user saw it {c['most']} times in a window"
            )
    return out


def line(found: Mapping[str, Any] | None) -> str:
    """The summary's Frequency line."""
    campaigns = list((found or {}).get("campaigns", ()))
    if not campaigns:
        return "Frequency no capped campaign in the portfolio: nothing to check"
    shown = [c for c in campaigns if c["impressions"]]
    over = sum(c["over_cap_users"] for c in campaigns)
    head = (
        f"Frequency {len(campaigns)} capped campaigns ({len(shown)} shown), "
        f"{sum(c['users'] for c in campaigns):,} users, "
        f"{sum(c['impressions'] for c in campaigns):,} impressions; most one user saw "
        f"{max((c['most'] for c in campaigns), default=0)}"
    )
    if over:
        return f"{head}: FAILED, {over} user(s) over a cap"
    return f"{head}: OK, no user over a cap"
