-- Plans, contracts (kind is derived from them), suspensions (standing), the customer's portal access as
-- reported by accounts, and the history of every change.

CREATE TABLE plans (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    price_minor     bigint NOT NULL CHECK (price_minor >= 0),   -- in the currency's minor unit (cents)
    currency        char(3) NOT NULL,
    billing_period  text NOT NULL CHECK (billing_period IN ('day', 'week', 'month', 'year')),
    booking_credit  integer NOT NULL DEFAULT 0 CHECK (booking_credit >= 0),   -- included per period
    printing_credit integer NOT NULL DEFAULT 0 CHECK (printing_credit >= 0),  -- included per period
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX plans_active_name_key ON plans (lower(name)) WHERE status = 'active';

-- A contract runs from starts_on to ends_on, both included; a cancellation moves ends_on earlier (the day before
-- starts_on: it never starts). `state` is what the lifecycle has processed: scheduled -> active -> ended or
-- cancelled. The scheduler and every write on a customer advance it to the current date.
CREATE TABLE contracts (
    id                  uuid PRIMARY KEY,
    customer_id         uuid NOT NULL REFERENCES customers (id),
    plan_id             uuid NOT NULL REFERENCES plans (id),
    starts_on           date NOT NULL,
    ends_on             date,
    original_ends_on    date,
    state               text NOT NULL DEFAULT 'scheduled' CHECK (state IN ('scheduled', 'active', 'ended', 'cancelled')),
    cancelled_at        timestamptz,
    cancellation_reason text,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (ends_on IS NULL OR ends_on >= starts_on - 1),
    CHECK ((cancelled_at IS NULL) = (cancellation_reason IS NULL))
);
CREATE INDEX contracts_customer ON contracts (customer_id, starts_on);
-- what the scheduler looks for: contracts whose next transition may be due
CREATE INDEX contracts_open ON contracts (starts_on, ends_on) WHERE state IN ('scheduled', 'active');

CREATE TABLE suspensions (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    category    text NOT NULL CHECK (category IN ('manual', 'overdue', 'policy', 'other')),
    reason      text NOT NULL,
    until       timestamptz,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by  text,
    lifted_at   timestamptz,
    lifted_by   text
);
CREATE UNIQUE INDEX suspensions_one_open ON suspensions (customer_id) WHERE lifted_at IS NULL;
CREATE INDEX suspensions_due ON suspensions (until) WHERE lifted_at IS NULL AND until IS NOT NULL;

-- portal access as accounts reports it (events), so the *create user account* action can answer 409 at once
ALTER TABLE customers
    ADD COLUMN portal_access text NOT NULL DEFAULT 'none'
        CHECK (portal_access IN ('none', 'requested', 'invited', 'active', 'suspended', 'revoked')),
    ADD COLUMN account_id uuid,
    ADD COLUMN account_sequence integer NOT NULL DEFAULT 0;
CREATE INDEX customers_kind_standing ON customers (kind, standing);
CREATE INDEX customers_full_name_id ON customers (lower(full_name), id);

CREATE TABLE customer_history (
    id             bigserial PRIMARY KEY,
    customer_id    uuid NOT NULL REFERENCES customers (id),
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    action         text NOT NULL,
    actor_type     text NOT NULL CHECK (actor_type IN ('operator', 'customer', 'system', 'service')),
    actor_id       text,
    details        jsonb NOT NULL DEFAULT '{}',
    correlation_id text
);
CREATE INDEX customer_history_customer ON customer_history (customer_id, id);
