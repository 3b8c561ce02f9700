-- Right to erasure: when the customer was erased. Their row stays (ids, kind, standing, contracts refer to it)
-- with its personal fields replaced by placeholders; nothing about them can change afterwards.
ALTER TABLE customers ADD COLUMN erased_at timestamptz;
