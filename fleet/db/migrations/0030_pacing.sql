-- Pacing: optional hourly caps per campaign (campaign managers), and each campaign's eligible
-- opportunities per hour of week (the pacer, from the bidders' counts), from which the plans'
-- traffic profiles are learnt. Money is integer micros of the campaign currency.

CREATE TABLE campaign_pacing (
    campaign_id          bigint PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    hourly_budget_micros bigint NOT NULL DEFAULT 0 CHECK (hourly_budget_micros >= 0),  -- 0: none
    version              bigint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER campaign_pacing_stamp_version BEFORE INSERT OR UPDATE ON campaign_pacing
    FOR EACH ROW EXECUTE FUNCTION config_stamp_version();

-- Counts decay with a half-life the writer applies (the pacer: two weeks), so the profile
-- follows the campaign's traffic as it changes. hour_of_week: 0 = Monday 00:00 local time.
CREATE TABLE campaign_opportunities (
    campaign_id    bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    hour_of_week   smallint NOT NULL CHECK (hour_of_week BETWEEN 0 AND 167),
    opportunities  double precision NOT NULL CHECK (opportunities >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, hour_of_week)
);
