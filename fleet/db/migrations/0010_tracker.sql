-- The tracker's tables: exactly-once notices, clicks, installs and in-app events, per-creative
-- spend, and the audit of automatic pauses. Money is integer micros (bigint).

-- Creatives gain a click-through URL (the landing page or the measurement partner's link, with
-- macros); campaigns gain their attribution window and, for CPA campaigns, the in-app event
-- that counts as an activation ('' counts installs).
ALTER TABLE creatives ADD COLUMN click_url text NOT NULL DEFAULT '';
ALTER TABLE campaigns
    ADD COLUMN attribution_window_seconds integer NOT NULL DEFAULT 604800
        CHECK (attribution_window_seconds > 0),
    ADD COLUMN goal_event text NOT NULL DEFAULT '';

-- Who paused a campaign or creative and why, when it was not the campaign manager's own status:
-- a later portfolio load keeps such a pause (see fleet/db/config_store.py) and shows it.
ALTER TABLE campaigns
    ADD COLUMN paused_by text NOT NULL DEFAULT '',
    ADD COLUMN pause_reason text NOT NULL DEFAULT '';
ALTER TABLE creatives
    ADD COLUMN paused_by text NOT NULL DEFAULT '',
    ADD COLUMN pause_reason text NOT NULL DEFAULT '';

-- One row per (transaction, notice kind) ever counted: the dedupe key. Its effects (spend,
-- click rows) commit in the same statement. kind is win, bill, loss, imp, click, or freq (the
-- transaction's frequency counters were incremented). price_micros: the clearing CPM in the bid
-- currency; cost_micros: what a billing notice added to campaign_spend, in the campaign
-- currency. Rows older than the notice lifetime can be purged (no signed URL reaches them).
CREATE TABLE tracker_notices (
    txid          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('win', 'bill', 'loss', 'imp', 'click', 'freq')),
    campaign_id   bigint NOT NULL,
    creative_id   bigint NOT NULL,
    price_micros  bigint NOT NULL DEFAULT 0 CHECK (price_micros >= 0),
    currency      char(3) NOT NULL,
    cost_micros   bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    recorded_at   timestamptz NOT NULL,
    PRIMARY KEY (txid, kind)
);
CREATE INDEX tracker_notices_recorded ON tracker_notices (recorded_at);

-- Spend per creative and campaign-timezone day, next to campaign_spend (cost per activation).
CREATE TABLE tracker_creative_spend (
    creative_id   bigint NOT NULL,
    campaign_id   bigint NOT NULL,
    day           date NOT NULL,
    spent_micros  bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    impressions   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (creative_id, day)
);
CREATE INDEX tracker_creative_spend_campaign ON tracker_creative_spend (campaign_id);

-- Clicks, for attribution: the click id the redirect carried, the user key when known.
CREATE TABLE tracker_clicks (
    click_id     text PRIMARY KEY,
    txid         text NOT NULL,
    campaign_id  bigint NOT NULL,
    creative_id  bigint NOT NULL,
    user_key     text,
    clicked_at   timestamptz NOT NULL
);
CREATE INDEX tracker_clicks_user ON tracker_clicks (user_key, clicked_at DESC)
    WHERE user_key IS NOT NULL;

-- Installs, one per device and app; attributed to a click or organic (click columns null).
CREATE TABLE tracker_installs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_key     text NOT NULL,
    app          text NOT NULL,
    partner      text NOT NULL,
    attributed   boolean NOT NULL,
    rule         text NOT NULL CHECK (rule IN ('click_id', 'last_click', 'organic')),
    click_id     text,
    txid         text,
    campaign_id  bigint,
    creative_id  bigint,
    event_ts     text NOT NULL DEFAULT '',
    installed_at timestamptz NOT NULL,
    UNIQUE (user_key, app),
    CHECK (attributed = (campaign_id IS NOT NULL))
);
CREATE INDEX tracker_installs_campaign ON tracker_installs (campaign_id) WHERE attributed;

-- In-app events (registration, purchase, ...), attributed when the device's install is.
-- The partner's resend of one event (same device, app, name and event time) counts once.
CREATE TABLE tracker_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_key        text NOT NULL,
    app             text NOT NULL,
    name            text NOT NULL CHECK (name <> ''),
    partner         text NOT NULL,
    attributed      boolean NOT NULL,
    click_id        text,
    txid            text,
    campaign_id     bigint,
    creative_id     bigint,
    revenue_micros  bigint NOT NULL DEFAULT 0 CHECK (revenue_micros >= 0),
    currency        char(3) NOT NULL DEFAULT 'USD',
    event_ts        text NOT NULL DEFAULT '',
    recorded_at     timestamptz NOT NULL,
    UNIQUE (user_key, app, name, event_ts),
    CHECK (attributed = (campaign_id IS NOT NULL))
);
CREATE INDEX tracker_events_campaign ON tracker_events (campaign_id, name) WHERE attributed;

-- Every automatic status change: what, from and to, who (the rule), why, when.
CREATE TABLE status_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      text NOT NULL CHECK (entity IN ('campaign', 'creative')),
    entity_id   bigint NOT NULL,
    old_status  text NOT NULL,
    new_status  text NOT NULL,
    changed_by  text NOT NULL CHECK (changed_by <> ''),
    reason      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_changes_entity ON status_changes (entity, entity_id, changed_at DESC);
