-- The relay is no longer woken by a NOTIFY from every transaction that writes the outbox: PostgreSQL serializes the
-- commits of all notifying transactions in the cluster behind one lock held through the WAL flush, so writes lost
-- their group commit. The writing process wakes its own relay when the connection goes back to its pool; a process
-- without a relay (the command line) sends NOTIFY outbox itself (shared.db.OutboxSignal).
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
