from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from services.accounts import security, store
from services.accounts.handlers import SERVICE, WelcomeConfig, make_handlers
from services.accounts.routes import ACCOUNTS_CFG, WELCOME_KEY, routes
from services.accounts.settings import AccountsSettings
from services.accounts.throttle import ThrottleConfig
from shared.auth import REVOCATION_CHECK, StaticKeyVerifier
from shared.revocation import RevocationCheck
from shared.sealing import load_key
from shared.service import RUNTIME, add_routes, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"


class ConfigError(RuntimeError):
    pass


def create_app(settings: AccountsSettings) -> web.Application:
    if settings.jwt_private_key_file is None:
        raise ConfigError(
            "ACCOUNTS_JWT_PRIVATE_KEY_FILE is not set: create a key with "
            "`python -m services.accounts generate-signing-key PATH` (there is no default key)"
        )
    if not settings.seal_key:
        raise ConfigError(
            "ACCOUNTS_SEAL_KEY is not set: create one with `python -m shared.sealing` and give the same value "
            "to NOTIFICATIONS_SEAL_KEY (there is no default key)"
        )
    signing_key = security.SigningKey.from_pem_file(settings.jwt_private_key_file)
    public_keys = [signing_key.private_key.public_key()] + [
        security.load_public_key(p) for p in settings.jwt_extra_public_key_files
    ]
    common = settings.common
    verifier = StaticKeyVerifier({security.key_id(k): k for k in public_keys}, common.jwt_issuer, common.jwt_audience)
    welcome = WelcomeConfig(
        seal_key=load_key(settings.seal_key),
        public_base_url=settings.public_base_url,
        invitation_ttl=timedelta(hours=settings.invitation_ttl_hours),
        password_reset_ttl=timedelta(minutes=settings.password_reset_ttl_minutes),
    )
    app = create_service_app(
        SERVICE,
        settings,
        migrations_dir=MIGRATIONS,
        consumers=make_handlers(welcome),
        verifier=verifier,
        cleanup_sql=(store.CUSTOMER_FACTS_CLEANUP_SQL,),
    )
    app[WELCOME_KEY] = welcome
    rt = app[RUNTIME]
    app[REVOCATION_CHECK] = RevocationCheck(
        lambda: rt.db,
        sql="""SELECT revoked_at, status <> 'revoked' AS restored FROM accounts
               WHERE id = $1 AND revoked_at IS NOT NULL""",
    )
    app[ACCOUNTS_CFG] = {
        "signing_key": signing_key,
        "jwks": [security.public_jwk(k) for k in public_keys],
        "access_token_ttl_s": settings.access_token_ttl_s,
        "password_min_length": settings.password_min_length,
        "refresh_token_ttl": timedelta(days=settings.refresh_token_ttl_days),
        "throttle": ThrottleConfig(
            window_s=settings.login_failure_window_s,
            max_per_email=settings.login_max_failures_per_email,
            max_per_address=settings.login_max_failures_per_address,
        ),
        "hash_pool": ThreadPoolExecutor(settings.password_hash_concurrency, thread_name_prefix="argon2"),
    }

    async def hash_pool(app: web.Application) -> AsyncIterator[None]:
        yield
        app[ACCOUNTS_CFG]["hash_pool"].shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(hash_pool)
    add_routes(app, routes)
    return app
