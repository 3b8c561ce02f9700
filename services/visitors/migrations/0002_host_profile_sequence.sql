-- Hosts converge whatever the delivery order. Every customer event carries kind and standing (watermark
-- `sequence`), but only created and updated carry the name and email, so those get their own watermark
-- `profile_sequence`. An event that arrives before `created` inserts what it knows: full_name and email stay
-- NULL (profile_sequence 0) until an event carrying them arrives. A host without an email is not yet known well
-- enough to receive visitors.
ALTER TABLE hosts
    ADD COLUMN profile_sequence integer NOT NULL DEFAULT 0,
    ALTER COLUMN full_name DROP NOT NULL,
    ALTER COLUMN email DROP NOT NULL;
UPDATE hosts SET profile_sequence = sequence;
