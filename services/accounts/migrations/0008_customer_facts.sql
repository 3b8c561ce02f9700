-- What customer events said about a customer that had no account yet when they were handled (an update handled
-- before, or at the same time as, the event that makes the account: the consumer handles messages concurrently
-- and retries reorder them). The account made later catches up from it; without it, such an update was lost.
-- Watermarked like the account (sequence for kind and standing, profile_sequence for email and name), deleted
-- when an account is made or the customer is erased, and after a day (longer than any retry) otherwise.
CREATE TABLE customer_facts (
    customer_id      uuid PRIMARY KEY,
    sequence         integer NOT NULL,
    kind             text NOT NULL,
    standing         text NOT NULL,
    profile_sequence integer NOT NULL DEFAULT 0,
    email            text,
    full_name        text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_facts_updated_at ON customer_facts (updated_at);
