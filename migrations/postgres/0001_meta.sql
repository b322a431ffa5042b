-- The store's format version: readiness reads it, so "ready" means reachable and migrated.
CREATE TABLE refex_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
INSERT INTO refex_meta (key, value) VALUES ('store_format', '1');
