-- The trace an outbox row was written in: the relay sends it as the message's traceparent header.
ALTER TABLE outbox ADD COLUMN traceparent text;
