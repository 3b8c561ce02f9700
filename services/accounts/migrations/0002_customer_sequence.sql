-- What accounts keeps from the customer events, so that it converges whatever the delivery order:
-- customer_sequence: the newest customer event sequence (the customer's version) whose kind and standing were
--   applied to this account (created = 1); a customer event with a sequence not above it changes neither.
-- customer_standing: the customer's standing as of that event, kept even while the account cannot follow it
--   (an invited account stays invited; activating it then gives status 'suspended' if this says so).
-- profile_sequence: the newest sequence of an event that carried the email and full name (created, updated,
--   user_account_requested). Only some events carry them, so they have their own watermark: an `updated` that
--   arrives after a newer `suspended` still changes the email.
ALTER TABLE accounts
    ADD COLUMN customer_sequence integer NOT NULL DEFAULT 0,
    ADD COLUMN customer_standing text NOT NULL DEFAULT 'active'
        CHECK (customer_standing IN ('active', 'suspended')),
    ADD COLUMN profile_sequence integer NOT NULL DEFAULT 0;
