CREATE TABLE customers (
    id           uuid PRIMARY KEY,
    full_name    text NOT NULL,
    email        text NOT NULL,
    company_name text,
    phone        text,
    kind         text NOT NULL DEFAULT 'contact' CHECK (kind IN ('member', 'contact')),
    standing     text NOT NULL DEFAULT 'active' CHECK (standing IN ('active', 'suspended')),
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- one customer per email address, whatever its case
CREATE UNIQUE INDEX customers_email_key ON customers (lower(email));
-- keyset pagination in creation order
CREATE INDEX customers_created_at_id ON customers (created_at, id);

-- Idempotency-Key on creating POSTs: the first response, replayed for a retry with the same key
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       integer NOT NULL,
    response     jsonb NOT NULL,
    location     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
