"""What the tracker reads of the config: campaigns, creatives and exchange rates by id.

Built from a ``fleet.config.ConfigSnapshot`` (``tracker.store`` reads one and refreshes it); a
notice for a campaign or creative the catalog does not know makes the store read it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.config import Campaign, ConfigSnapshot, Creative


@dataclass(frozen=True)
class Catalog:
    campaigns: dict[int, Campaign] = field(default_factory=dict)
    creatives: dict[int, Creative] = field(default_factory=dict)
    fx_per_usd_micros: dict[str, int] = field(default_factory=dict)
    version: int = 0
    loaded_at: float = 0.0  # monotonic seconds

    @classmethod
    def from_snapshot(cls, snapshot: ConfigSnapshot, loaded_at: float) -> Catalog:
        return cls(
            campaigns={c.id: c for c in snapshot.campaigns},
            creatives={cr.id: cr for c in snapshot.campaigns for cr in c.creatives},
            fx_per_usd_micros=dict(snapshot.fx_per_usd_micros),
            version=snapshot.version,
            loaded_at=loaded_at,
        )

    def knows(self, campaign_id: int, creative_id: int, currency: str) -> bool:
        creative = self.creatives.get(creative_id)
        return (
            campaign_id in self.campaigns
            and creative is not None
            and creative.campaign_id == campaign_id
            and currency in self.fx_per_usd_micros
            and self.campaigns[campaign_id].currency in self.fx_per_usd_micros
        )
