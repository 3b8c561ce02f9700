from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from services.visitors.handlers import HANDLERS
from services.visitors.routes import CLOCK, NO_SHOW_AFTER, PLACE, SERVICE, TIMEZONE, routes
from services.visitors.scheduler import Scheduler
from services.visitors.settings import VisitorsSettings
from services.visitors.visits import Place
from shared import idempotency
from shared.auth import STANDING_LOOKUP, TokenVerifier
from shared.clock import Clock
from shared.service import RUNTIME, add_routes, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEDULER = web.AppKey("scheduler", Scheduler)


def create_app(
    settings: VisitorsSettings, verifier: TokenVerifier | None = None, clock: Clock | None = None
) -> web.Application:
    """Visitors and their visits. Hosts are known from the service's own replica of customer events (``hosts``),
    never by asking customers; a scheduler marks no-shows and anonymises visitors past the retention period."""
    tz = ZoneInfo(settings.timezone)  # an unknown zone fails here, at start-up
    app = create_service_app(
        SERVICE,
        settings,
        migrations_dir=MIGRATIONS,
        consumers=HANDLERS,
        verifier=verifier,
        revocations_queue="visitors.account-events",
        # a client retrying with the same Idempotency-Key gets the first answer for a day
        cleanup_sql=(idempotency.CLEANUP_SQL,),
    )
    app[CLOCK] = clock or Clock()
    app[TIMEZONE] = tz
    app[PLACE] = Place(tz, settings.space_address)
    app[NO_SHOW_AFTER] = timedelta(minutes=settings.no_show_after_minutes)

    async def standing_of(customer_id: uuid.UUID) -> str | None:
        """A suspended host is refused on every changing route even with a token that still says active."""
        return await app[RUNTIME].db.fetchval("SELECT standing FROM hosts WHERE customer_id = $1", customer_id)

    app[STANDING_LOOKUP] = standing_of

    async def scheduler(app: web.Application) -> AsyncIterator[None]:
        s = Scheduler(
            app[RUNTIME].db,
            app[CLOCK],
            no_show_after=app[NO_SHOW_AFTER],
            retention=timedelta(days=settings.retention_days),
            interval_s=settings.scheduler_interval_s,
            batch_size=settings.scheduler_batch_size,
        )
        app[SCHEDULER] = s
        s.start()
        yield
        await s.stop()

    app.cleanup_ctx.append(scheduler)
    add_routes(app, routes)
    return app
