-- Other internal services' credentials: an operator creates one with scopes; the secret is shown once and only
-- its SHA-256 is kept (it is 256 random bits, so a fast hash suffices).
CREATE TABLE service_clients (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
