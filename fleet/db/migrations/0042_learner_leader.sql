-- The learners that split the event partitions (RTBFLEET_LEARNER_RELAY_BIND set): one row per
-- fleet lock key, written only by the learner holding that advisory lock (the leader, which
-- trains and exports). ``epoch`` counts leaderships; ``address`` is where the leader receives the
-- other learners' joined examples (a ZMQ PULL endpoint); ``state`` is the leader's training state
-- (a learner checkpoint, ``learner.checkpoint``), saved with each of its checkpoints, from which
-- the next leader resumes training. Writer: the learner.

CREATE TABLE learner_leader (
    lock_key        bigint PRIMARY KEY,
    epoch           bigint NOT NULL CHECK (epoch > 0),
    address         text NOT NULL,
    leader          text NOT NULL,                 -- the leading process (host:pid, share)
    since           timestamptz NOT NULL DEFAULT now(),
    state           bytea,
    state_epoch     bigint,
    state_saved_at  timestamptz
);
