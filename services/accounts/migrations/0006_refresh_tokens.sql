-- Refresh tokens (256 random bits; only their SHA-256 is kept). Each use rotates: the token is marked used and a
-- new one in the same family replaces it. A used token presented again means it leaked: the whole family is
-- revoked. Logout, a password reset and revoked portal access revoke them too.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    family_id   uuid NOT NULL,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_account_id ON refresh_tokens (account_id);
