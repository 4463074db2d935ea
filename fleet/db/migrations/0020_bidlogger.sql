-- The bid loggers' tables (bidlogger/). Each logger subscribes to a set of event-bus partitions,
-- its "shard" (canonical text such as '0-15/64'), and writes one batch per flush: minute
-- aggregates, the minutes of event time it listened through (coverage), the bus positions it has
-- consumed up to, and, for the raw-sample partitions, every event whole. A batch is applied at
-- most once: its identity (logger id, flush sequence) is recorded in the same transaction.
--
-- Counts are what the shard saw. The *_fleet views scale them by P / (partitions covered) and
-- mark them estimated when the shards that reported in a period do not cover all P partitions;
-- with disjoint shards covering every partition the figures are exact.

CREATE TABLE bidlogger_batches (
    logger_id   text NOT NULL,
    flush_seq   bigint NOT NULL,
    shard       text NOT NULL,
    events      bigint NOT NULL CHECK (events >= 0),
    raw_events  bigint NOT NULL CHECK (raw_events >= 0),
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (logger_id, flush_seq)
);
CREATE INDEX bidlogger_batches_applied ON bidlogger_batches (applied_at);

-- What each logger has consumed, per (publisher, topic): the bus sequence numbers of the last
-- message folded into an applied batch. A restarted logger compares the first message it hears
-- with this to count what it missed.
CREATE TABLE bidlogger_positions (
    logger_id     text NOT NULL,
    publisher_id  text NOT NULL,
    topic         text NOT NULL,
    incarnation   numeric(20, 0) NOT NULL,
    seq           bigint NOT NULL,
    total         bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (logger_id, publisher_id, topic)
);

-- Events a logger knows it did not count, and why: bus gaps (per publisher), a restart's missed
-- window, a publisher that came back without a goodbye, a full spool.
CREATE TABLE bidlogger_losses (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logger_id     text NOT NULL,
    flush_seq     bigint NOT NULL,
    cause         text NOT NULL,
    publisher_id  text NOT NULL DEFAULT '',
    topic         text NOT NULL DEFAULT '',
    events        bigint NOT NULL CHECK (events >= 0),
    detected_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bidlogger_losses_logger ON bidlogger_losses (logger_id, detected_at);

-- Aggregates, one tier per grain. The minute tier is partitioned by day (dropped whole when
-- past retention); the hourly and daily tiers are roll-ups, recomputed idempotently.
-- p_click_e9: predicted click probability summed over the impressions joined to their bid, in
-- units of 1e-9 (integers add exactly, in any order); joined: how many impressions that is.
CREATE TABLE bidlogger_minute (
    minute        timestamptz NOT NULL,
    shard         text NOT NULL,
    campaign_id   bigint NOT NULL,
    creative_id   bigint NOT NULL,
    event_type    text NOT NULL,
    events        bigint NOT NULL,
    spend_micros  bigint NOT NULL,
    p_click_e9    bigint NOT NULL,
    joined        bigint NOT NULL,
    PRIMARY KEY (minute, shard, campaign_id, creative_id, event_type)
) PARTITION BY RANGE (minute);

CREATE TABLE bidlogger_hourly (
    hour          timestamptz NOT NULL,
    shard         text NOT NULL,
    campaign_id   bigint NOT NULL,
    creative_id   bigint NOT NULL,
    event_type    text NOT NULL,
    events        bigint NOT NULL,
    spend_micros  bigint NOT NULL,
    p_click_e9    bigint NOT NULL,
    joined        bigint NOT NULL,
    PRIMARY KEY (hour, shard, campaign_id, creative_id, event_type)
);

CREATE TABLE bidlogger_daily (
    day           date NOT NULL,
    shard         text NOT NULL,
    campaign_id   bigint NOT NULL,
    creative_id   bigint NOT NULL,
    event_type    text NOT NULL,
    events        bigint NOT NULL,
    spend_micros  bigint NOT NULL,
    p_click_e9    bigint NOT NULL,
    joined        bigint NOT NULL,
    PRIMARY KEY (day, shard, campaign_id, creative_id, event_type)
);

-- Which shard listened through which period of event time, and how many of how many partitions
-- it holds. grain: 'minute', 'hour' or 'day' (period is the period's start, UTC).
CREATE TABLE bidlogger_coverage (
    grain               text NOT NULL CHECK (grain IN ('minute', 'hour', 'day')),
    period              timestamptz NOT NULL,
    shard               text NOT NULL,
    partitions_covered  integer NOT NULL CHECK (partitions_covered > 0),
    partitions_total    integer NOT NULL CHECK (partitions_total >= partitions_covered),
    PRIMARY KEY (grain, period, shard)
);

-- Periods whose roll-up is out of date: each batch marks the hours it touched (per shard, so that
-- loggers never wait on each other's rows); the roll-up job recomputes and clears them.
CREATE TABLE bidlogger_dirty (
    grain   text NOT NULL CHECK (grain IN ('hour', 'day')),
    period  timestamptz NOT NULL,
    shard   text NOT NULL,
    PRIMARY KEY (grain, period, shard)
);

-- Every event of the raw-sample partitions, whole (jsonb), partitioned by day of its own
-- timestamp. The same rows go to hourly Parquet files in the object store.
CREATE TABLE bidlogger_raw (
    ts             timestamptz NOT NULL,
    event_type     text NOT NULL,
    txid           text NOT NULL,
    bus_partition  integer NOT NULL,
    campaign_id    bigint NOT NULL,
    creative_id    bigint NOT NULL,
    logger_id      text NOT NULL,
    flush_seq      bigint NOT NULL,
    event          jsonb NOT NULL
) PARTITION BY RANGE (ts);

-- Per-creative impression and click counts over a recent window, as the creative feed last
-- published them (the bidder's cache namespace "creative" loads from here on a miss).
CREATE TABLE creative_stats (
    creative_id  bigint PRIMARY KEY,
    campaign_id  bigint NOT NULL,
    impressions  bigint NOT NULL CHECK (impressions >= 0),
    clicks       bigint NOT NULL CHECK (clicks >= 0),
    estimated    boolean NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The day partition of a day-partitioned bid-logger table, created when missing. Concurrent
-- callers serialise on an advisory lock per partition name, so two loggers reaching a new day
-- at once do not fail. Returns the partition's name.
CREATE FUNCTION bidlogger_day_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF parent NOT IN ('bidlogger_minute', 'bidlogger_raw') THEN
        RAISE EXCEPTION 'not a day-partitioned bid-logger table: %', parent;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            name, parent,
            (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN name;
END $$;

-- Fleet figures: counts summed over shards, scaled by P / partitions covered in that period.
CREATE VIEW bidlogger_minute_fleet AS
WITH cov AS (
    SELECT period, sum(partitions_covered)::integer AS covered, max(partitions_total) AS total
    FROM bidlogger_coverage WHERE grain = 'minute' GROUP BY period
), sums AS (
    SELECT minute, campaign_id, creative_id, event_type, sum(events)::bigint AS events,
           sum(spend_micros)::bigint AS spend_micros, sum(p_click_e9)::bigint AS p_click_e9,
           sum(joined)::bigint AS joined
    FROM bidlogger_minute GROUP BY minute, campaign_id, creative_id, event_type
)
SELECT s.minute, s.campaign_id, s.creative_id, s.event_type,
       coalesce(c.covered, 0) AS partitions_covered, c.total AS partitions_total,
       (c.covered IS NULL OR c.covered < c.total) AS estimated,
       CASE WHEN c.covered >= c.total THEN s.events
            ELSE round(s.events::numeric * c.total / nullif(c.covered, 0))::bigint END AS events,
       CASE WHEN c.covered >= c.total THEN s.spend_micros
            ELSE round(s.spend_micros::numeric * c.total / nullif(c.covered, 0))::bigint
       END AS spend_micros,
       s.p_click_e9::double precision / 1e9 AS p_click_sum,
       s.joined,
       s.events AS events_seen, s.spend_micros AS spend_micros_seen
FROM sums s LEFT JOIN cov c ON c.period = s.minute;

CREATE VIEW bidlogger_hourly_fleet AS
WITH cov AS (
    SELECT period, sum(partitions_covered)::integer AS covered, max(partitions_total) AS total
    FROM bidlogger_coverage WHERE grain = 'hour' GROUP BY period
), sums AS (
    SELECT hour, campaign_id, creative_id, event_type, sum(events)::bigint AS events,
           sum(spend_micros)::bigint AS spend_micros, sum(p_click_e9)::bigint AS p_click_e9,
           sum(joined)::bigint AS joined
    FROM bidlogger_hourly GROUP BY hour, campaign_id, creative_id, event_type
)
SELECT s.hour, s.campaign_id, s.creative_id, s.event_type,
       coalesce(c.covered, 0) AS partitions_covered, c.total AS partitions_total,
       (c.covered IS NULL OR c.covered < c.total) AS estimated,
       CASE WHEN c.covered >= c.total THEN s.events
            ELSE round(s.events::numeric * c.total / nullif(c.covered, 0))::bigint END AS events,
       CASE WHEN c.covered >= c.total THEN s.spend_micros
            ELSE round(s.spend_micros::numeric * c.total / nullif(c.covered, 0))::bigint
       END AS spend_micros,
       s.p_click_e9::double precision / 1e9 AS p_click_sum,
       s.joined,
       s.events AS events_seen, s.spend_micros AS spend_micros_seen
FROM sums s LEFT JOIN cov c ON c.period = s.hour;

CREATE VIEW bidlogger_daily_fleet AS
WITH cov AS (
    SELECT period, sum(partitions_covered)::integer AS covered, max(partitions_total) AS total
    FROM bidlogger_coverage WHERE grain = 'day' GROUP BY period
), sums AS (
    SELECT day, campaign_id, creative_id, event_type, sum(events)::bigint AS events,
           sum(spend_micros)::bigint AS spend_micros, sum(p_click_e9)::bigint AS p_click_e9,
           sum(joined)::bigint AS joined
    FROM bidlogger_daily GROUP BY day, campaign_id, creative_id, event_type
)
SELECT s.day, s.campaign_id, s.creative_id, s.event_type,
       coalesce(c.covered, 0) AS partitions_covered, c.total AS partitions_total,
       (c.covered IS NULL OR c.covered < c.total) AS estimated,
       CASE WHEN c.covered >= c.total THEN s.events
            ELSE round(s.events::numeric * c.total / nullif(c.covered, 0))::bigint END AS events,
       CASE WHEN c.covered >= c.total THEN s.spend_micros
            ELSE round(s.spend_micros::numeric * c.total / nullif(c.covered, 0))::bigint
       END AS spend_micros,
       s.p_click_e9::double precision / 1e9 AS p_click_sum,
       s.joined,
       s.events AS events_seen, s.spend_micros AS spend_micros_seen
FROM sums s LEFT JOIN cov c ON c.period = (s.day::timestamp AT TIME ZONE 'UTC');
