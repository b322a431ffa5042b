-- Inbox positions. A delivery gets its recipient's next position inside the transaction that
-- queues it; the counter row stays locked until that transaction commits, so positions become
-- visible in order and a cursor ("after position N") never skips a delivery that commits late.
CREATE TABLE inbox_counters (
    recipient TEXT PRIMARY KEY NOT NULL,
    next      BIGINT NOT NULL
);
ALTER TABLE deliveries ADD COLUMN inbox_pos BIGINT;
ALTER TABLE deliveries ADD COLUMN fetched_at BIGINT;
ALTER TABLE deliveries ADD COLUMN acked_at BIGINT;
CREATE UNIQUE INDEX deliveries_inbox_pos ON deliveries (recipient, inbox_pos);
