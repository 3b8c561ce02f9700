from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.customers.routes import SERVICE, routes
from services.customers.settings import CustomersSettings
from shared.auth import TokenVerifier
from shared.service import create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: CustomersSettings, verifier: TokenVerifier | None = None) -> web.Application:
    app = create_service_app(
        SERVICE,
        settings,
        migrations_dir=MIGRATIONS,
        verifier=verifier,
        # a client retrying with the same Idempotency-Key gets the first answer for a day
        cleanup_sql=("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",),
    )
    app.router.add_routes(routes)
    return app
