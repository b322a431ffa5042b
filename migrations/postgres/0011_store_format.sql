-- The store format at its floor. Each audit event is stored once, as its canonical leaf (the
-- text that was hashed): the `detail` column that repeated it goes, and readers parse the
-- leaf. Merkle nodes are 32-byte hashes instead of 64 hex characters.
--
-- Contracting, not expand-only: part of 0.2.0, which cannot be a rolling update from 0.1.0
-- anyway (see CHANGELOG.md); every migration after 0.2.0's only adds. The store format
-- becomes 3, so a replica of an older release still running fails its readiness.
--
-- Nothing is dropped unless it is kept elsewhere: an event without a leaf that is not a
-- purged referral's, or a node that is not exactly 64 hex characters, fails the migration
-- and nothing changes (decode() alone would skip whitespace); OPERATIONS.md says what to do.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_events e
                WHERE e.leaf IS NULL
                  AND (e.referral_id IS NULL
                       OR EXISTS (SELECT 1 FROM referrals r WHERE r.id = e.referral_id))) THEN
        RAISE EXCEPTION 'migration 0011: an audit event of a live referral has no leaf, so dropping its detail would lose it';
    END IF;
    -- A leaf that is not JSON raises here.
    PERFORM e.leaf::json FROM audit_events e WHERE e.leaf IS NOT NULL;
    IF EXISTS (SELECT 1 FROM audit_nodes WHERE hash !~ '^[0-9a-fA-F]{64}$') THEN
        RAISE EXCEPTION 'migration 0011: an audit node''s hash is not 64 hex characters';
    END IF;
END
$$;

ALTER TABLE audit_events DROP COLUMN detail;

ALTER TABLE audit_nodes ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');
ALTER TABLE audit_nodes ADD CONSTRAINT audit_nodes_hash_32 CHECK (octet_length(hash) = 32);

UPDATE refex_meta SET value = '3' WHERE key = 'store_format';
