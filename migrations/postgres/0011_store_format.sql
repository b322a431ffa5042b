-- The store format at its floor. Each audit event is stored once, as its canonical leaf (the
-- text that was hashed): the `detail` column that repeated it goes, and readers parse the
-- leaf. Merkle nodes are 32-byte hashes instead of 64 hex characters.
--
-- Contracting, not expand-only: part of 0.2.0, which cannot be a rolling update from 0.1.0
-- anyway (see CHANGELOG.md); every migration after 0.2.0's only adds.
ALTER TABLE audit_events DROP COLUMN detail;

-- A node that is not 64 hex characters fails the migration (decode raises): never dropped.
ALTER TABLE audit_nodes ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');
ALTER TABLE audit_nodes ADD CONSTRAINT audit_nodes_hash_32 CHECK (octet_length(hash) = 32);
