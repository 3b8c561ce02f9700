-- The trace of the request that asked for the email: sending it and its sent/failed event continue that trace.
ALTER TABLE deliveries ADD COLUMN traceparent text;
