"""The four services' applications running inside the test process, on free ports, against the test's own
databases and broker prefix (integration tests). The e2e tests run them as separate processes instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from services.accounts.app import create_app as accounts_app
from services.accounts.settings import AccountsSettings
from services.customers.app import create_app as customers_app
from services.customers.settings import CustomersSettings
from services.notifications.app import create_app as notifications_app
from services.notifications.settings import NotificationsSettings
from services.visitors.app import create_app as visitors_app
from services.visitors.settings import VisitorsSettings
from shared.clock import Clock
from shared.service import RUNTIME, Runtime
from shared.settings import CommonSettings
from tests.support.smtp import free_port
from tests.support.tokens import KeyRing
from tests.support.wait import wait_for


@dataclass
class InProcessSystem:
    databases: dict[str, str]
    prefix: str
    keys: KeyRing
    seal_key: str
    amqp_url: str
    smtp_port: int | None = None
    mail_dir: Path | None = None
    retry_delays_ms: list[int] = field(default_factory=lambda: [100, 200, 400])
    send_retry_delays_s: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.8])
    consumer_workers: int = 1
    relay_poll_interval_s: float = 0.2  # the relays' fallback poll (a test of their wake-ups sets it long)
    relay_enabled: bool = True
    services: tuple[str, ...] = ("customers", "accounts", "visitors", "notifications")
    jwks_url: str | None = None  # set: services verify tokens with the JWKS there instead of the test key
    access_log_burst: int = 100  # access lines a second per route for successful requests (ACCESS_LOG_BURST)
    clock: Clock | None = None  # customers' and visitors' clock (a FakeClock lets a test travel in time)
    amqp_urls: dict[str, str] = field(default_factory=dict)  # per service, instead of amqp_url (its own user)
    urls: dict[str, str] = field(default_factory=dict)
    apps: dict[str, web.Application] = field(default_factory=dict)
    _runners: dict[str, web.AppRunner] = field(default_factory=dict)

    def common(self, name: str | None = None) -> CommonSettings:
        extra = {"jwks_url": self.jwks_url} if self.jwks_url else {}
        return CommonSettings(
            **extra,
            amqp_url=self.amqp_urls.get(name or "", self.amqp_url),
            amqp_prefix=self.prefix,
            retry_delays_ms=self.retry_delays_ms,
            relay_poll_interval_s=self.relay_poll_interval_s,
            relay_enabled=self.relay_enabled,
            log_format="text",
            access_log_burst=self.access_log_burst,
            shutdown_grace_s=5,
            consumer_workers=self.consumer_workers,
        )

    def build(self, name: str) -> web.Application:
        common = self.common(name)
        base: dict[str, Any] = {"database_url": self.databases[name], "common": common, "db_pool_min": 1}
        if name == "customers":
            return customers_app(
                CustomersSettings(**base, scheduler_interval_s=0.1),
                verifier=None if self.jwks_url else self.keys.verifier(),
                clock=self.clock,
            )
        if name == "accounts":
            return accounts_app(
                AccountsSettings(
                    **base,
                    jwt_private_key_file=self.keys.path,
                    seal_key=self.seal_key,
                    public_base_url="http://portal.test",
                )
            )
        if name == "visitors":
            return visitors_app(VisitorsSettings(**base), verifier=self.keys.verifier(), clock=self.clock)
        return notifications_app(
            NotificationsSettings(
                **base,
                seal_key=self.seal_key,
                smtp_host="127.0.0.1" if self.smtp_port else None,
                smtp_port=self.smtp_port or 25,
                mail_dir=self.mail_dir or Path("/nonexistent"),
                send_retry_delays_s=self.send_retry_delays_s,
                dispatch_poll_interval_s=0.2,
            ),
            verifier=self.keys.verifier(),
        )

    async def start(self, *names: str, wait_ready: bool = True) -> None:
        for name in names or self.services:
            app = self.build(name)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.apps[name] = app
            self._runners[name] = runner
            self.urls[name] = f"http://127.0.0.1:{port}"
        if wait_ready:
            for name in names or self.services:
                await self.wait_ready(name)

    async def wait_ready(self, name: str, timeout: float = 15) -> None:
        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{self.urls[name]}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=timeout, what=f"{name} to be ready")

    def runtime(self, name: str) -> Runtime:
        return self.apps[name][RUNTIME]

    async def stop(self, *names: str) -> None:
        for name in names or list(self._runners):
            runner = self._runners.pop(name, None)
            if runner is not None:
                await runner.cleanup()
