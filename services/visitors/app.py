from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.visitors.handlers import HANDLERS
from services.visitors.settings import VisitorsSettings
from shared.auth import TokenVerifier
from shared.service import create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "visitors"


def create_app(settings: VisitorsSettings, verifier: TokenVerifier | None = None) -> web.Application:
    """Visits and visitors arrive with their own issue; today the service keeps its replica of the customers
    who can host visitors, fed by customer events."""
    return create_service_app(
        SERVICE,
        settings,
        migrations_dir=MIGRATIONS,
        consumers=HANDLERS,
        verifier=verifier,
        revocations_queue="visitors.account-events",
    )
