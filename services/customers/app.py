from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from services.customers import entitlements, plans, privacy, teams
from services.customers.handlers import HANDLERS
from services.customers.routes import CLOCK, SERVICE, TIMEZONE, routes
from services.customers.scheduler import Scheduler
from services.customers.settings import CustomersSettings
from shared import idempotency
from shared.auth import STANDING_LOOKUP, TokenVerifier
from shared.clock import Clock
from shared.service import RUNTIME, add_routes, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEDULER = web.AppKey("scheduler", Scheduler)


def create_app(
    settings: CustomersSettings, verifier: TokenVerifier | None = None, clock: Clock | None = None
) -> web.Application:
    app = create_service_app(
        SERVICE,
        settings,
        migrations_dir=MIGRATIONS,
        consumers=HANDLERS,
        verifier=verifier,
        revocations_queue="customers.account-events",
        # a client retrying with the same Idempotency-Key gets the first answer for a day
        cleanup_sql=(idempotency.CLEANUP_SQL,),
    )
    app[CLOCK] = clock or Clock()

    async def standing_of(customer_id: uuid.UUID) -> str | None:
        return await app[RUNTIME].db.fetchval("SELECT standing FROM customers WHERE id = $1", customer_id)

    app[STANDING_LOOKUP] = standing_of
    app[TIMEZONE] = ZoneInfo(settings.timezone)

    async def scheduler(app: web.Application) -> AsyncIterator[None]:
        s = Scheduler(app[RUNTIME].db, app[CLOCK], app[TIMEZONE], settings.scheduler_interval_s)
        app[SCHEDULER] = s
        s.start()
        yield
        await s.stop()

    app.cleanup_ctx.append(scheduler)
    add_routes(app, routes)
    add_routes(app, plans.routes)
    add_routes(app, privacy.routes)
    add_routes(app, teams.routes)
    add_routes(app, entitlements.routes)
    return app
