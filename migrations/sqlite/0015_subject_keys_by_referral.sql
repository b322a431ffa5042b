-- Subject keys clustered on their referral, WITHOUT ROWID: the table is its own index by
-- referral (what purge deletes by), so the second copy of every key that index was goes. A
-- recipient's key names no delivery: a referral has one delivery per recipient (its claims'
-- `to` has unique items), which subject access finds by the pair. `received` tells a
-- recipient's key (1, written when its delivery entered its inbox) from the sender's (0).
--
-- Part of 0.2.0, which is not yet released (store format 4, see 0012). Every key is kept:
-- the same key twice for the same holder was one key (DISTINCT).
CREATE TABLE subject_keys_v15 (
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    partner     TEXT NOT NULL,
    received    INTEGER NOT NULL CHECK (received IN (0, 1)),
    subject     BLOB NOT NULL CHECK (typeof(subject) = 'blob' AND length(subject) = 32),
    PRIMARY KEY (referral_id, partner, received, subject)
) WITHOUT ROWID;
INSERT INTO subject_keys_v15 (referral_id, partner, received, subject)
SELECT DISTINCT referral_id, partner, CASE WHEN delivery_id IS NULL THEN 0 ELSE 1 END, subject
  FROM subject_keys;
DROP TABLE subject_keys;
ALTER TABLE subject_keys_v15 RENAME TO subject_keys;
CREATE INDEX subject_keys_subject ON subject_keys (subject, partner);
