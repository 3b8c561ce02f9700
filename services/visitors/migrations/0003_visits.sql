-- Visitors (people, recognised again by email) and their visits (one occasion each).

-- A visitor never gets a user account and is never a customer. Their personal data is anonymised (set to NULL,
-- `anonymised_at` stamped) once their last visit ended longer ago than VISITORS_RETENTION_DAYS; the visits stay.
CREATE TABLE visitors (
    id            uuid PRIMARY KEY,
    full_name     text,
    email         text,
    company_name  text,
    phone         text,
    anonymised_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (anonymised_at IS NOT NULL OR (full_name IS NOT NULL AND email IS NOT NULL)),
    CHECK (anonymised_at IS NULL OR (full_name IS NULL AND email IS NULL AND company_name IS NULL AND phone IS NULL))
);
-- one (not anonymised) visitor per email address, whatever its case: a later visit finds the same visitor
CREATE UNIQUE INDEX visitors_email_key ON visitors (lower(email)) WHERE email IS NOT NULL;

-- status: expected -> checked_in -> checked_out, or expected -> cancelled, or expected -> no_show (scheduler).
-- Times of the changes are the service clock's (injectable, so tests travel in time); `ended_at` is when the
-- visit reached a final state (checked_out, cancelled, no_show), which the retention rule counts from.
CREATE TABLE visits (
    id                    uuid PRIMARY KEY,
    visitor_id            uuid NOT NULL REFERENCES visitors (id),
    host_customer_id      uuid,            -- a customer in `hosts`; NULL for an operator-led tour
    purpose               text NOT NULL CHECK (purpose IN ('tour', 'meeting', 'event', 'other')),
    expected_at           timestamptz NOT NULL,
    expected_departure_at timestamptz CHECK (expected_departure_at > expected_at),
    notes                 text,
    check_in_code         text NOT NULL,
    status                text NOT NULL DEFAULT 'expected'
                          CHECK (status IN ('expected', 'checked_in', 'checked_out', 'cancelled', 'no_show')),
    checked_in_at         timestamptz,
    checked_out_at        timestamptz,
    cancelled_at          timestamptz,
    cancellation_reason   text,
    no_show_at            timestamptz,
    ended_at              timestamptz,
    registered_by_type    text NOT NULL CHECK (registered_by_type IN ('operator', 'host')),
    registered_by_account uuid NOT NULL,
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status IN ('expected', 'checked_in')) = (ended_at IS NULL))
);
-- a check-in code identifies one open visit; once the visit is over the code may be drawn again
CREATE UNIQUE INDEX visits_open_check_in_code ON visits (check_in_code) WHERE status IN ('expected', 'checked_in');
-- listing in expected order (keyset pagination), per host, and the scheduler's due visits
CREATE INDEX visits_expected_at_id ON visits (expected_at, id);
CREATE INDEX visits_host_expected_at ON visits (host_customer_id, expected_at, id);
CREATE INDEX visits_due_no_show ON visits (expected_at) WHERE status = 'expected';
CREATE INDEX visits_visitor ON visits (visitor_id);

-- Idempotency-Key on POST /v1/visits: the first response, replayed for a retry with the same key (a day)
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
