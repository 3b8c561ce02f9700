"""Time moves visits and visitors on: a visit still expected ``no_show_after`` past its expected arrival becomes a
no-show, and a visitor whose last visit ended more than ``retention`` ago is anonymised.

Each tick works in batches, each batch in its own transaction holding the row locks it took with ``SKIP LOCKED``:
several replicas can run the scheduler side by side, and a visit (or visitor) one of them or a request holds is
skipped by the others and picked up at the next tick if still due. It works from times and statuses, not from a
log of ticks, so after downtime everything that fell due meanwhile is done at the first tick, once."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import asyncpg

from services.visitors import visits
from shared.background import PeriodicLoop
from shared.clock import Clock

log = logging.getLogger(__name__)


class Scheduler(PeriodicLoop):
    name = "visits-scheduler"

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Clock,
        *,
        no_show_after: timedelta,
        retention: timedelta,
        interval_s: float = 30.0,
        batch_size: int = 200,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.clock = clock
        self.no_show_after = no_show_after
        self.retention = retention
        self.interval_s = interval_s
        self.batch_size = batch_size

    async def run_once(self) -> tuple[int, int]:
        """Mark every due no-show and anonymise every due visitor. Returns (no-shows, visitors anonymised)."""
        now = self.clock.now()
        correlation_id = f"scheduler-{uuid.uuid4()}"
        no_shows = 0
        while not self._stop.is_set():
            async with self.pool.acquire() as conn, conn.transaction():
                marked = await visits.mark_no_shows(
                    conn, now, now - self.no_show_after, self.batch_size, correlation_id
                )
            no_shows += len(marked)
            if len(marked) < self.batch_size:
                break
        anonymised = 0
        while not self._stop.is_set():
            async with self.pool.acquire() as conn, conn.transaction():
                n = await visits.anonymise_visitors(conn, now, now - self.retention, self.batch_size)
            anonymised += n
            if n < self.batch_size:
                break
        if no_shows or anonymised:
            log.info("visits scheduler tick", extra={"no_shows": no_shows, "visitors_anonymised": anonymised})
        return no_shows, anonymised
