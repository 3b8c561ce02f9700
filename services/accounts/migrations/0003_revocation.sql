-- When portal access was last revoked: tokens issued at or before it are refused, also after a restore.
ALTER TABLE accounts ADD COLUMN revoked_at timestamptz;
