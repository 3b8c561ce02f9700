"""Time moves the state: contracts start and end on their dates, suspensions end on theirs.

Each tick looks for customers with a transition due and advances each one in its own transaction, holding the
customer's row lock taken with ``SKIP LOCKED``: several replicas can run the scheduler side by side, and a
customer being advanced by one is skipped by the others (and picked up at the next tick if still due). Because
it works from dates and states, not from a log of ticks, it catches up after downtime: a contract that ended
while the service was down ends at the first tick, once."""

from __future__ import annotations

import logging
import uuid
from zoneinfo import ZoneInfo

import asyncpg

from services.customers import credit, lifecycle
from shared.background import PeriodicLoop
from shared.clock import Clock

log = logging.getLogger(__name__)


class Scheduler(PeriodicLoop):
    name = "lifecycle-scheduler"

    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, tz: ZoneInfo, interval_s: float = 30.0, batch_size: int = 500
    ) -> None:
        super().__init__()
        self.pool = pool
        self.clock = clock
        self.tz = tz
        self.interval_s = interval_s
        self.batch_size = batch_size

    async def run_once(self) -> int:
        """Advance every customer with something due now. Returns how many customers were advanced."""
        today = self.clock.today(self.tz)
        now = self.clock.now()
        correlation_id = f"scheduler-{uuid.uuid4()}"
        due_contracts = await self.pool.fetch(
            """SELECT DISTINCT customer_id FROM contracts
               WHERE (state = 'scheduled' AND (starts_on <= $1 OR ends_on < starts_on))
                  OR (state = 'active' AND ends_on < $1)
               LIMIT $2""",
            today,
            self.batch_size,
        )
        due_grants = await self.pool.fetch(credit.DUE_GRANTS_SQL, today, self.batch_size)
        due_customers = list(dict.fromkeys(r["customer_id"] for r in [*due_contracts, *due_grants]))
        due_suspensions = await self.pool.fetch(
            "SELECT customer_id FROM suspensions WHERE lifted_at IS NULL AND until <= $1 LIMIT $2",
            now,
            self.batch_size,
        )
        done = 0
        for customer_id in due_customers:
            async with self.pool.acquire() as conn, conn.transaction():
                customer = await lifecycle.lock_customer(conn, customer_id, skip_locked=True)
                if customer is None:
                    continue  # another replica or a request holds it; still due at the next tick if not handled
                await lifecycle.advance(conn, customer, today, lifecycle.Actor.system(), correlation_id)
                done += 1
        for r in due_suspensions:
            async with self.pool.acquire() as conn, conn.transaction():
                customer = await lifecycle.lock_customer(conn, r["customer_id"], skip_locked=True)
                if customer is None or customer["standing"] != "suspended":
                    continue
                still_due = await conn.fetchval(
                    "SELECT 1 FROM suspensions WHERE customer_id = $1 AND lifted_at IS NULL AND until <= $2",
                    customer["id"],
                    now,
                )
                if still_due:
                    await lifecycle.lift_suspension(conn, customer, lifecycle.Actor.system(), correlation_id, None)
                    done += 1
        return done
