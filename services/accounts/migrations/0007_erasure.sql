-- When the account's customer was erased: the account row stays (its id is referred to elsewhere) with
-- placeholders for email and name, no credentials, revoked for good.
ALTER TABLE accounts ADD COLUMN erased_at timestamptz;
