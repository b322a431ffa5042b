-- Purge walks referrals oldest first in bounded batches: by received_at, indexed.
-- Expand-only: an index the previous release does not need.
CREATE INDEX referrals_received ON referrals (received_at);
