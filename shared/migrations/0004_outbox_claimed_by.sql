-- The relay that holds a row's lease: when a claim's reply is lost (the connection cut mid-statement) or its mark
-- fails, that relay takes the rows back on its next round instead of waiting out the lease. NULL once marked.
ALTER TABLE outbox ADD COLUMN claimed_by uuid;
