CREATE TABLE accounts (
    id            uuid PRIMARY KEY,
    customer_id   uuid UNIQUE,              -- NULL for operator (admin) accounts
    email         text NOT NULL,
    full_name     text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'member', 'contact')),
    status        text NOT NULL CHECK (status IN ('invited', 'active', 'suspended', 'revoked')),
    password_hash text,                     -- argon2id; NULL until the invitation is used
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    CHECK (role = 'admin' OR customer_id IS NOT NULL),
    CHECK (status <> 'active' OR password_hash IS NOT NULL)
);
CREATE UNIQUE INDEX accounts_email_key ON accounts (lower(email));

-- Set-password links. Only a SHA-256 of the token is kept: the token has 256 bits of entropy, so a fast hash
-- is enough (no brute force), and a database leak gives no usable link.
CREATE TABLE invitations (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invitations_account_id ON invitations (account_id);
