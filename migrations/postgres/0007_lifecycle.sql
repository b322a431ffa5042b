-- The disclosure lifecycle in the store (issue: one typed core for every step after intake).
--
-- * Delivery statuses and audit event kinds are closed lists, checked by the database too.
--   The lists are `lifecycle::DeliveryStatus::ALL` and `audit::event::EventKind::ALL`; the store
--   conformance suite inserts every value of each and one unknown value, so the two cannot
--   drift apart silently.
-- * `queued_at`: when a delivery entered its recipient's inbox (intake or a lead's release);
--   retention is counted from it, not from submission. Filled for existing rows from their
--   `queued` audit event.
-- * `review_reason_sealed` moves to the delivery: a lead decides each recipient on its own.
-- * Replay markers remember the referral they admitted and a digest of its signed claims, so
--   a retry of the same referral is answered with the original acceptance.
-- * Subject keys are indexed per partner that may find them: the sender's from the full
--   payload, each recipient's from the minimised copy it received (written when the delivery
--   enters its inbox). Earlier rows were built from the full payload: they are kept for the
--   sender only.
ALTER TABLE deliveries ADD COLUMN queued_at BIGINT;
ALTER TABLE deliveries ADD COLUMN review_reason_sealed TEXT;
UPDATE deliveries d SET queued_at = (
    SELECT MAX(e.at) FROM audit_events e
     WHERE e.referral_id = d.referral_id AND e.delivery_id = d.id AND e.kind = 'queued');
UPDATE deliveries d SET review_reason_sealed = r.review_reason_sealed
  FROM referrals r WHERE r.id = d.referral_id AND d.status = 'rejected-by-review';
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_known CHECK (status IN (
    'held-for-review', 'rejected-by-review', 'queued', 'delivered', 'acknowledged',
        'withdrawn', 'expired', 'expired-undecided'));
CREATE INDEX deliveries_expiry ON deliveries (recipient, status, queued_at);

ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_known CHECK (kind IN (
    'accepted', 'rejected', 'minimised', 'held', 'queued', 'reviewed', 'fetched',
        'acknowledged', 'withdrawn', 'expired', 'purged', 'escalated', 'subject-access',
        'report', 'config-loaded', 'key-rotated', 'consulted', 'release-refused', 'closed-undecided'));
DROP INDEX audit_events_referral;
CREATE INDEX audit_events_referral ON audit_events (referral_id, kind);

ALTER TABLE replay_markers ADD COLUMN referral_id TEXT;
ALTER TABLE replay_markers ADD COLUMN digest TEXT;

CREATE TABLE subject_keys (
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    partner     TEXT NOT NULL,
    delivery_id TEXT,
    subject     TEXT NOT NULL
);
CREATE INDEX subject_keys_subject ON subject_keys (subject, partner);
CREATE INDEX subject_keys_referral ON subject_keys (referral_id);
INSERT INTO subject_keys (referral_id, partner, delivery_id, subject)
SELECT s.referral_id, r.sender, NULL, s.subject
  FROM subject_index s JOIN referrals r ON r.id = s.referral_id;
DROP TABLE subject_index;

CREATE INDEX referrals_supersedes ON referrals (supersedes);

UPDATE refex_meta SET value = '2' WHERE key = 'store_format';
