-- Reviews: holds not decided in time are escalated (never released); a decision's reason is
-- free text a lead wrote, so it is kept sealed under the storage key.
ALTER TABLE holds ADD COLUMN escalated_at BIGINT;
ALTER TABLE referrals ADD COLUMN review_reason_sealed TEXT;
