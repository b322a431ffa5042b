-- Subject keys as the 32 bytes of their MAC, not 64 hex characters: half the table's and its
-- subject index's key bytes (the subject-access index was a sixth of the store per referral).
--
-- Part of 0.2.0, which is not yet released (see 0011 and 0012). A key that is not exactly 64
-- hex characters fails the migration and nothing changes (decode() alone would skip
-- whitespace): no key is dropped.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM subject_keys WHERE subject !~ '^[0-9a-fA-F]{64}$') THEN
        RAISE EXCEPTION 'migration 0013: a subject key is not 64 hex characters';
    END IF;
END
$$;

ALTER TABLE subject_keys ALTER COLUMN subject TYPE BYTEA USING decode(subject, 'hex');
ALTER TABLE subject_keys ADD CONSTRAINT subject_keys_subject_32 CHECK (octet_length(subject) = 32);
