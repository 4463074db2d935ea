-- Models: the learner's exports (fleet.model format version 2), one row per model version, the
-- newest one what every bidder scores with. Too big for the memcached tier (1 MB items), so the
-- coherence bus carries only the announcement (the "model"/"latest" cache key: the version);
-- each bidder then reads the bytes from here. Writer: the learner.

CREATE TABLE models (
    version             bigint PRIMARY KEY CHECK (version > 0),
    feature_set         text NOT NULL,
    feature_set_version integer NOT NULL CHECK (feature_set_version >= 0),
    estimator           text NOT NULL DEFAULT '',          -- the grid's chosen estimator
    nonzero             bigint NOT NULL CHECK (nonzero >= 0),
    size_bytes          bigint NOT NULL CHECK (size_bytes > 0),
    body                bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
