-- Notices to leads sent once per key (a day's digest per partner), across replicas and
-- restarts. Expand-only: the previous release never reads it.
CREATE TABLE notices (
    key  TEXT PRIMARY KEY,
    at   BIGINT NOT NULL
);
