-- Accounts whose portal access was revoked, as told by accounts' events: an access token of such an account issued
-- at or before revoked_at is refused (also after a restore), and none is accepted while it is revoked.
CREATE TABLE revoked_accounts (
    account_id  uuid PRIMARY KEY,
    revoked_at  timestamptz NOT NULL,
    restored    boolean NOT NULL DEFAULT false,
    sequence    integer NOT NULL
);
