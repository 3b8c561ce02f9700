"""Fixtures on the real PostgreSQL and RabbitMQ. When either is unreachable, the tests that need it FAIL and say
which (they never skip). Each test gets its own databases (cloned from migrated templates) and its own
exchange/queue prefix on the broker."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from services.accounts.app import MIGRATIONS as ACCOUNTS_MIGRATIONS
from services.customers.app import MIGRATIONS as CUSTOMERS_MIGRATIONS
from services.notifications.app import MIGRATIONS as NOTIFICATIONS_MIGRATIONS
from services.visitors.app import MIGRATIONS as VISITORS_MIGRATIONS
from shared.db import drop_database, ensure_database, migrate
from shared.sealing import new_key
from shared.topology import Topology
from tests.support.smtp import SmtpServer
from tests.support.tokens import KeyRing

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MIGRATIONS = {
    "customers": CUSTOMERS_MIGRATIONS,
    "accounts": ACCOUNTS_MIGRATIONS,
    "visitors": VISITORS_MIGRATIONS,
    "notifications": NOTIFICATIONS_MIGRATIONS,
}
RUN_ID = uuid.uuid4().hex[:8]
RETRY_DELAYS_USED: set[int] = {1000, 5000, 30000, 120000, 600000, 100, 200, 400, 800}


def dsn(database: str) -> str:
    return f"{PG_URL.rstrip('/')}/{database}"


@pytest.fixture(scope="session")
def infrastructure() -> None:
    async def check() -> list[str]:
        problems = []
        try:
            conn = await asyncpg.connect(dsn("postgres"), timeout=5)
            await conn.close()
        except Exception as exc:
            problems.append(f"PostgreSQL is unreachable at {PG_URL}: {exc}")
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=5)
            await connection.close()
        except Exception as exc:
            problems.append(f"RabbitMQ is unreachable at {AMQP_URL}: {exc}")
        return problems

    problems = asyncio.run(check())
    if problems:
        pytest.fail("; ".join(problems) + " (start it: see the README)", pytrace=False)


@pytest.fixture(scope="session")
def db_templates(infrastructure: None) -> Iterator[dict[str, str]]:
    """One migrated template database per service, cloned for each test."""
    names = {svc: f"cwt_{RUN_ID}_tmpl_{svc}" for svc in MIGRATIONS}

    async def build() -> None:
        for svc, name in names.items():
            await drop_database(dsn(name))
            await migrate(dsn(name), MIGRATIONS[svc])

    async def drop() -> None:
        for name in names.values():
            await drop_database(dsn(name))

    asyncio.run(build())
    yield names
    asyncio.run(drop())


@pytest.fixture
async def databases(db_templates: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """Fresh, migrated databases for this test: {service: dsn}."""
    suffix = uuid.uuid4().hex[:8]
    out = {svc: dsn(f"cwt_{RUN_ID}_{suffix}_{svc}") for svc in db_templates}
    # each from its own template, so the four copies can be made at once (a copy waits for nothing but its template)
    await asyncio.gather(*(ensure_database(out[svc], template=template) for svc, template in db_templates.items()))
    yield out
    dropped = await asyncio.gather(*(drop_database(url) for url in out.values()), return_exceptions=True)
    for url, result in zip(out.values(), dropped, strict=True):
        if isinstance(result, BaseException):  # the others are dropped all the same
            print(f"could not drop {url}: {result}")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def amqp(infrastructure: None, prefix: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A connection for the test itself; the test's whole topology is deleted afterwards."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    yield connection
    channel = await connection.channel()
    # every retry delay any test used, so no retry queue is left behind
    await Topology(prefix, tuple(sorted(RETRY_DELAYS_USED))).delete(channel)
    await connection.close()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def seal_key() -> str:
    return new_key()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
async def system_factory(
    databases: dict[str, str], prefix: str, keys: KeyRing, seal_key: str, amqp: object
) -> AsyncIterator[object]:
    """Builds an in-process system; stops whatever it started at the end of the test."""
    from tests.support.system import InProcessSystem

    made: list[InProcessSystem] = []

    def make(**kwargs: object) -> InProcessSystem:
        kwargs.setdefault("amqp_url", AMQP_URL)
        RETRY_DELAYS_USED.update(kwargs.get("retry_delays_ms", ()))  # type: ignore[arg-type]
        system = InProcessSystem(databases=dict(databases), prefix=prefix, keys=keys, seal_key=seal_key, **kwargs)
        made.append(system)
        return system

    yield make
    for system in made:
        await system.stop()
