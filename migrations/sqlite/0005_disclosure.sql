-- Disclosure records and subject access. The override justification is kept encrypted under
-- the storage key (only leads and auditors may read it); subjects are indexed by keyed hash
-- (HMAC-SHA-256 with a secret from configuration) of normalised identifiers, never the
-- identifiers themselves.
ALTER TABLE referrals ADD COLUMN justification_sealed TEXT;

CREATE TABLE subject_index (
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    subject     TEXT NOT NULL,
    PRIMARY KEY (referral_id, subject)
);
CREATE INDEX subject_index_subject ON subject_index (subject);
