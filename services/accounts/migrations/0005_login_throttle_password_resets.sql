-- Failed logins, shared by every replica: one row per failure and key (a SHA-256 of "email:<lowercased email>"
-- or "address:<client address>", so the table holds no plain email). Rows older than the throttle window are
-- deleted as new failures arrive.
CREATE TABLE login_failures (
    id  bigserial PRIMARY KEY,
    key bytea NOT NULL,
    at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);
CREATE INDEX login_failures_at ON login_failures (at);

-- Password-reset links reuse the invitations table (token hash, expiry, single use): the purpose tells them
-- apart, so a reset token never activates an account and a set-password token never resets a password.
ALTER TABLE invitations
    ADD COLUMN purpose text NOT NULL DEFAULT 'invitation' CHECK (purpose IN ('invitation', 'password_reset'));
