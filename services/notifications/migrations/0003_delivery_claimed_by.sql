-- The dispatcher that holds a delivery's lease: when a claim's reply is lost (the connection cut mid-statement),
-- that dispatcher takes the deliveries back on its next claim (none of them was being sent) instead of waiting out
-- the lease. Cleared when a temporary failure schedules the next attempt.
ALTER TABLE deliveries ADD COLUMN claimed_by uuid;
