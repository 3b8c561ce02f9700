-- When the host customer was erased: their name and email are gone from this replica and cannot come back.
ALTER TABLE hosts ADD COLUMN erased_at timestamptz;
