-- Recorded spend per campaign and day (campaign timezone), integer micros. The tracker adds
-- billed spend here; the pacing gate and reports read it.
CREATE TABLE campaign_spend (
    campaign_id   bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    day           date NOT NULL,
    spent_micros  bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    impressions   bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, day)
);

CREATE VIEW campaign_spend_total AS
SELECT campaign_id, sum(spent_micros)::bigint AS spent_micros, sum(impressions)::bigint AS impressions
FROM campaign_spend GROUP BY campaign_id;
