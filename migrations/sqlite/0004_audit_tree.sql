-- The audit log as an RFC 6962 Merkle tree. Every event is a leaf: `idx` is its gapless
-- position, taken from `audit_head` under a row lock in the writing transaction (one sequence:
-- concurrent writers and replicas can never fork the tree); `leaf` is the exact canonical JSON
-- that was hashed (NULL once purged; its hash stays). `audit_nodes` holds the hash of every
-- completed perfect subtree (level 0: leaf hashes), so roots and proofs need O(log n) reads.
ALTER TABLE audit_events ADD COLUMN idx BIGINT;
ALTER TABLE audit_events ADD COLUMN leaf TEXT;
CREATE UNIQUE INDEX audit_events_idx ON audit_events (idx);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO audit_head (id, size) VALUES (1, 0);

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  TEXT NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE audit_checkpoints (
    size   BIGINT PRIMARY KEY NOT NULL,
    root   TEXT NOT NULL,
    at     BIGINT NOT NULL,
    signed TEXT NOT NULL
);
