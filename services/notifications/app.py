from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from services.notifications.dispatcher import SERVICE, Dispatcher
from services.notifications.handlers import make_handlers
from services.notifications.mail import FileSender, Renderer, Sender, SmtpSender
from services.notifications.routes import routes
from services.notifications.settings import NotificationsSettings
from shared.auth import TokenVerifier
from shared.sealing import load_key
from shared.service import RUNTIME, add_routes, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"
DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def make_sender(settings: NotificationsSettings) -> Sender:
    if settings.smtp_host:
        return SmtpSender(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            tls=settings.smtp_tls,
            timeout_s=settings.smtp_timeout_s,
            max_connections=settings.dispatch_concurrency,
            max_messages_per_connection=settings.smtp_max_messages_per_connection,
            idle_timeout_s=settings.smtp_idle_timeout_s,
        )
    return FileSender(settings.mail_dir)


def create_app(settings: NotificationsSettings, verifier: TokenVerifier | None = None) -> web.Application:
    if not settings.seal_key:
        raise RuntimeError(
            "NOTIFICATIONS_SEAL_KEY is not set: give it the same value as ACCOUNTS_SEAL_KEY "
            "(create one with `python -m shared.sealing`)"
        )
    seal_key = load_key(settings.seal_key)
    renderer = Renderer()
    app = create_service_app(
        SERVICE,
        settings,
        migrations_dir=MIGRATIONS,
        consumers=make_handlers(renderer.templates()),
        verifier=verifier,
        revocations_queue="notifications.account-events",
    )
    rt = app[RUNTIME]

    async def dispatcher(app: web.Application) -> AsyncIterator[None]:
        d = Dispatcher(
            rt.db,
            make_sender(settings),
            renderer,
            seal_key=seal_key,
            mail_from=settings.mail_from,
            space_name=settings.space_name,
            retry_delays_s=settings.send_retry_delays_s,
            batch_size=settings.dispatch_batch_size,
            concurrency=settings.dispatch_concurrency,
            poll_interval_s=settings.dispatch_poll_interval_s,
            # longer than any SMTP conversation, so a lease never ends while its email is still being sent
            lease_s=max(settings.delivery_lease_s, 4 * settings.smtp_timeout_s),
        )
        app[DISPATCHER] = d
        d.start()
        yield
        await d.stop()

    # wake the dispatcher as soon as a new delivery commits
    rt.after_commit["notifications.send-email"] = lambda: app[DISPATCHER].wake() if DISPATCHER in app else None
    # registered after messaging: cleanups run in reverse, so on SIGTERM the dispatcher finishes its round
    # (and writes its events to the outbox) before the consumers, the relay and the pool stop
    app.cleanup_ctx.append(dispatcher)
    add_routes(app, routes)
    return app
