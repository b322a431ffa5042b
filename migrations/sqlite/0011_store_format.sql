-- The store format at its floor. Each audit event is stored once, as its canonical leaf (the
-- text that was hashed): the `detail` column that repeated it goes, and readers parse the
-- leaf. Merkle nodes are 32-byte hashes instead of 64 hex characters, in a table clustered on
-- its key (no second copy of every key in a primary-key index).
--
-- Contracting, not expand-only: part of 0.2.0, which cannot be a rolling update from 0.1.0
-- anyway (see CHANGELOG.md); every migration after 0.2.0's only adds.
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
