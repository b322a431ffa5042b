-- Each gateway replica announces itself on every housekeeping pass; rate quotas are divided
-- among those seen lately, so the number of replicas is never configured by hand.
-- Expand-only: the previous release never reads it.
CREATE TABLE replicas (
    id       TEXT PRIMARY KEY,
    seen_at  BIGINT NOT NULL
);
