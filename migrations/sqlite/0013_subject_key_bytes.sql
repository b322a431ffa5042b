-- Subject keys as the 32 bytes of their MAC, not 64 hex characters: half the table's and its
-- subject index's key bytes (the subject-access index was a sixth of the store per referral).
--
-- Part of 0.2.0, which is not yet released (see 0011 and 0012). A key that is not exactly 64
-- hex characters fails the migration (unhex gives NULL, which the NOT NULL refuses) and
-- nothing changes: no key is dropped.
CREATE TABLE subject_keys_v13 (
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    partner     TEXT NOT NULL,
    delivery_id TEXT,
    subject     BLOB NOT NULL CHECK (typeof(subject) = 'blob' AND length(subject) = 32)
);
INSERT INTO subject_keys_v13 (referral_id, partner, delivery_id, subject)
SELECT referral_id, partner, delivery_id,
       CASE WHEN length(subject) = 64 THEN unhex(subject) END
  FROM subject_keys;
DROP TABLE subject_keys;
ALTER TABLE subject_keys_v13 RENAME TO subject_keys;
CREATE INDEX subject_keys_subject ON subject_keys (subject, partner);
CREATE INDEX subject_keys_referral ON subject_keys (referral_id);
