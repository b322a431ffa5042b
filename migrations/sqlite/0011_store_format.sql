-- The store format at its floor. Each audit event is stored once, as its canonical leaf (the
-- text that was hashed): the `detail` column that repeated it goes, and readers parse the
-- leaf. Merkle nodes are 32-byte hashes instead of 64 hex characters, in a table clustered on
-- its key (no second copy of every key in a primary-key index).
--
-- Contracting, not expand-only: part of 0.2.0, which cannot be a rolling update from 0.1.0
-- anyway (see CHANGELOG.md); every migration after 0.2.0's only adds. The store format
-- becomes 3, so a replica of an older release still running fails its readiness.
--
-- The detail column is dropped only if every event it would take is kept by its leaf: an
-- event without a readable leaf that is not a purged referral's fails the migration (the
-- CHECK below) and nothing changes; OPERATIONS.md says what to do.
CREATE TEMP TABLE migration_0011_guard (
    events_without_a_leaf INTEGER NOT NULL CHECK (events_without_a_leaf = 0)
);
INSERT INTO migration_0011_guard
SELECT COUNT(*) FROM audit_events e
 WHERE (e.leaf IS NULL OR json_valid(e.leaf) = 0)
   AND (e.referral_id IS NULL OR EXISTS (SELECT 1 FROM referrals r WHERE r.id = e.referral_id));
DROP TABLE migration_0011_guard;

ALTER TABLE audit_events DROP COLUMN detail;

CREATE TABLE audit_nodes_v11 (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BLOB NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
-- A node that is not 64 hex characters fails the migration (unhex gives NULL): never dropped.
INSERT INTO audit_nodes_v11 (level, idx, hash) SELECT level, idx, unhex(hash) FROM audit_nodes;
DROP TABLE audit_nodes;
ALTER TABLE audit_nodes_v11 RENAME TO audit_nodes;

UPDATE refex_meta SET value = '3' WHERE key = 'store_format';
