-- Teams, credit ledgers and effective space access.

CREATE TABLE teams (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    paying_member_id      uuid REFERENCES customers (id),
    max_size              integer CHECK (max_size IS NULL OR max_size >= 1),
    share_booking_credit  boolean NOT NULL DEFAULT false,
    share_printing_credit boolean NOT NULL DEFAULT false,
    share_access          boolean NOT NULL DEFAULT false,
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at            timestamptz
);
CREATE UNIQUE INDEX teams_live_name_key ON teams (lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX teams_name_id ON teams (lower(name), id);

-- Dated membership: a row per stay in a team, so "who was in this team on a given day" has an answer. A customer
-- may belong to several teams, once at a time in each.
CREATE TABLE team_memberships (
    id          bigserial PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id),
    customer_id uuid NOT NULL REFERENCES customers (id),
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    joined_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    left_at     timestamptz,
    CHECK (left_at IS NULL OR left_at >= joined_at)
);
CREATE UNIQUE INDEX team_memberships_current ON team_memberships (team_id, customer_id) WHERE left_at IS NULL;
CREATE INDEX team_memberships_customer ON team_memberships (customer_id) WHERE left_at IS NULL;
CREATE INDEX team_memberships_team_dates ON team_memberships (team_id, joined_at);

-- Credit is a ledger: every grant (positive) and every draw of a consumption (negative) is an entry. The balance
-- row is the sum of a customer's entries of a kind, kept in the same transaction as the entries; consumptions lock
-- the balance rows they may draw on (in customer-id order), and the CHECK is the last guard against overdraft.
CREATE TABLE credit_entries (
    id             bigserial PRIMARY KEY,
    customer_id    uuid NOT NULL REFERENCES customers (id),
    kind           text NOT NULL CHECK (kind IN ('booking', 'printing')),
    amount         integer NOT NULL CHECK (amount <> 0),
    reason         text NOT NULL CHECK (reason IN ('plan', 'operator', 'consumption')),
    reference      text,
    note           text,
    consumption_id uuid,           -- the consumption this draw belongs to
    consumer_id    uuid,           -- who consumed (another team member when the pool paid)
    team_id        uuid,           -- the team whose sharing let the consumer draw on this balance
    contract_id    uuid,           -- plan grants: the contract, and the period they are for
    period_start   date,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by     text,
    CHECK ((reason = 'consumption') = (amount < 0)),
    CHECK ((reason = 'plan') = (contract_id IS NOT NULL AND period_start IS NOT NULL))
);
CREATE INDEX credit_entries_customer ON credit_entries (customer_id, id);
CREATE INDEX credit_entries_consumption ON credit_entries (consumption_id) WHERE consumption_id IS NOT NULL;
CREATE UNIQUE INDEX credit_entries_plan_period ON credit_entries (contract_id, kind, period_start) WHERE reason = 'plan';

CREATE TABLE credit_balances (
    customer_id uuid NOT NULL REFERENCES customers (id),
    kind        text NOT NULL CHECK (kind IN ('booking', 'printing')),
    balance     bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    PRIMARY KEY (customer_id, kind)
);

-- how many billing periods of a contract have had their plan credit granted (period n starts on
-- starts_on + n * billing period, computed from starts_on each time so month ends do not drift)
ALTER TABLE contracts ADD COLUMN periods_credited integer NOT NULL DEFAULT 0;

-- Effective space access as last announced (customers.access.granted/revoked), to publish only changes.
CREATE TABLE customer_access (
    customer_id uuid PRIMARY KEY REFERENCES customers (id),
    granted     boolean NOT NULL DEFAULT false,
    rule        text NOT NULL DEFAULT 'none',
    team_id     uuid,
    version     integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
