-- One row per email the service was asked to send: the intent is recorded in the consumer's transaction,
-- the SMTP conversation happens after commit, and the outcome is recorded with its event.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    request_key     text NOT NULL UNIQUE,     -- the requester's idempotency key, e.g. welcome:<invitation id>
    template        text NOT NULL,
    to_email        text NOT NULL,
    to_name         text NOT NULL,
    customer_id     uuid,
    account_id      uuid,
    context         jsonb NOT NULL DEFAULT '{}',
    sealed_context  text,                     -- secrets, still sealed; cleared once sent or failed
    subject         text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    correlation_id  text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    failed_at       timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_customer ON deliveries (customer_id, created_at, id);
CREATE INDEX deliveries_created ON deliveries (created_at, id);
