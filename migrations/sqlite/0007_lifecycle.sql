-- The disclosure lifecycle in the store (issue: one typed core for every step after intake).
--
-- * Delivery statuses and audit event kinds are closed lists, checked by the database too.
--   The lists are `lifecycle::DeliveryStatus::ALL` and `audit::event::EventKind::ALL`; the store
--   conformance suite inserts every value of each and one unknown value, so the two cannot
--   drift apart silently. SQLite cannot add a CHECK to a table, so both tables are rebuilt.
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
CREATE TABLE deliveries_v7 (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    id                   TEXT NOT NULL UNIQUE,
    referral_id          TEXT NOT NULL REFERENCES referrals (id),
    recipient            TEXT NOT NULL,
    agreement            TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN (
        'held-for-review', 'rejected-by-review', 'queued', 'delivered', 'acknowledged',
        'withdrawn', 'expired', 'expired-undecided')),
    sealed               TEXT,
    bytes                BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    inbox_pos            BIGINT,
    fetched_at           BIGINT,
    acked_at             BIGINT,
    queued_at            BIGINT,
    review_reason_sealed TEXT
);
INSERT INTO deliveries_v7 (seq, id, referral_id, recipient, agreement, status, sealed, bytes,
                           created_at, updated_at, inbox_pos, fetched_at, acked_at, queued_at,
                           review_reason_sealed)
SELECT d.seq, d.id, d.referral_id, d.recipient, d.agreement, d.status, d.sealed, d.bytes,
       d.created_at, d.updated_at, d.inbox_pos, d.fetched_at, d.acked_at,
       (SELECT MAX(e.at) FROM audit_events e
         WHERE e.referral_id = d.referral_id AND e.delivery_id = d.id AND e.kind = 'queued'),
       CASE WHEN d.status = 'rejected-by-review' THEN r.review_reason_sealed END
  FROM deliveries d JOIN referrals r ON r.id = d.referral_id;
DROP TABLE deliveries;
ALTER TABLE deliveries_v7 RENAME TO deliveries;
CREATE INDEX deliveries_inbox ON deliveries (recipient, status, seq);
CREATE INDEX deliveries_referral ON deliveries (referral_id);
CREATE UNIQUE INDEX deliveries_inbox_pos ON deliveries (recipient, inbox_pos);
CREATE INDEX deliveries_expiry ON deliveries (recipient, status, queued_at);

CREATE TABLE audit_events_v7 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN (
        'accepted', 'rejected', 'minimised', 'held', 'queued', 'reviewed', 'fetched',
        'acknowledged', 'withdrawn', 'expired', 'purged', 'escalated', 'subject-access',
        'report', 'config-loaded', 'key-rotated', 'consulted', 'release-refused', 'closed-undecided')),
    referral_id  TEXT,
    delivery_id  TEXT,
    actor        TEXT,
    detail       TEXT NOT NULL,
    idx          BIGINT,
    leaf         TEXT
);
INSERT INTO audit_events_v7 (seq, at, kind, referral_id, delivery_id, actor, detail, idx, leaf)
SELECT seq, at, kind, referral_id, delivery_id, actor, detail, idx, leaf FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v7 RENAME TO audit_events;
CREATE INDEX audit_events_referral ON audit_events (referral_id, kind);
CREATE UNIQUE INDEX audit_events_idx ON audit_events (idx);

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
