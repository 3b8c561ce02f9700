-- The visitors service's own replica of the customer facts it needs to accept hosts, fed by customer events
-- (never read from the customers database). `sequence` is the customer's version: a stale event never
-- overwrites a newer one.
CREATE TABLE hosts (
    customer_id uuid PRIMARY KEY,
    full_name   text NOT NULL,
    email       text NOT NULL,
    kind        text NOT NULL,
    standing    text NOT NULL,
    sequence    integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
