-- Pacing: how long a lease granted by any pacer may still be live, per leadership lock. The
-- leader raises it (real Unix seconds) before it publishes leases; a new leader waits until it
-- has passed (plus the clock skew) before granting anything, and not at all on a fleet where
-- no lease was ever granted.

CREATE TABLE pacer_lease_horizon (
    lock_key   bigint PRIMARY KEY,
    horizon    double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
