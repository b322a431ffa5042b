-- Referral acceptance: the referral record (no payload), its deliveries (ciphertext for the
-- recipient only), the encrypted hold, replay markers and the audit events, all written in
-- one transaction.
CREATE TABLE referrals (
    id               TEXT PRIMARY KEY NOT NULL,
    sender           TEXT NOT NULL,
    sender_ref       TEXT NOT NULL,
    referral_type    TEXT NOT NULL,
    received_at      BIGINT NOT NULL,
    lawful_basis     TEXT NOT NULL,
    consent_status   TEXT NOT NULL,
    consent_override TEXT,
    subject_informed TEXT NOT NULL,
    supersedes       TEXT
);
CREATE INDEX referrals_sender ON referrals (sender, received_at);

CREATE TABLE replay_markers (
    sender  TEXT NOT NULL,
    jti     TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (sender, jti)
);

CREATE TABLE deliveries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    recipient   TEXT NOT NULL,
    agreement   TEXT NOT NULL,
    status      TEXT NOT NULL,
    sealed      TEXT,
    bytes       BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX deliveries_inbox ON deliveries (recipient, status, seq);
CREATE INDEX deliveries_referral ON deliveries (referral_id);

CREATE TABLE holds (
    referral_id    TEXT PRIMARY KEY NOT NULL REFERENCES referrals (id),
    sealed         TEXT NOT NULL,
    storage_key_id TEXT NOT NULL,
    held_at        BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    referral_id  TEXT,
    delivery_id  TEXT,
    actor        TEXT,
    detail       TEXT NOT NULL
);
CREATE INDEX audit_events_referral ON audit_events (referral_id);
