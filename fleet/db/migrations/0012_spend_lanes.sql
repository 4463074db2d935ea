-- Spend lanes. Every billing commit used to update its campaign's one campaign_spend row (and
-- its creative's one tracker_creative_spend row) for the day, and held that row's lock until
-- its WAL flush ended, so the concurrent commits of one campaign ran one after the other.
-- Each concurrent commit of a tracker process now adds to a row of its own: its lane (see
-- tracker/store.py, spend_lanes). The spend of a campaign and day is the sum over its lanes;
-- every reader sums (a row is no longer the whole day's spend).
--
-- Rows written before this migration, and by anything that does not name a lane, are lane 0.

ALTER TABLE campaign_spend
    ADD COLUMN lane smallint NOT NULL DEFAULT 0 CHECK (lane >= 0);
ALTER TABLE campaign_spend
    DROP CONSTRAINT campaign_spend_pkey,
    ADD PRIMARY KEY (campaign_id, day, lane);

ALTER TABLE tracker_creative_spend
    ADD COLUMN lane smallint NOT NULL DEFAULT 0 CHECK (lane >= 0);
ALTER TABLE tracker_creative_spend
    DROP CONSTRAINT tracker_creative_spend_pkey,
    ADD PRIMARY KEY (creative_id, day, lane);

-- A campaign's spend per day, summed over its lanes: what campaign_spend was before lanes.
-- (campaign_spend_total already sums every row of a campaign, lanes included.)
CREATE VIEW campaign_spend_daily AS
SELECT campaign_id, day, sum(spent_micros)::bigint AS spent_micros,
       sum(impressions)::bigint AS impressions, max(updated_at) AS updated_at
FROM campaign_spend GROUP BY campaign_id, day;
