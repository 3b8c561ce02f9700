"""Scenario 2: PostgreSQL kills the services' connections mid-transaction, and refuses connections for a few
seconds, while customers are created. All four services, notifications included: when its dispatcher cannot
record an outcome after the SMTP server accepted an email, it keeps the outcome and retries the write (within the
delivery's lease), so no email is sent twice because the database was away."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.conftest import PG_URL, dsn
from tests.fault import checks
from tests.fault.conftest import N
from tests.fault.system import SERVICES
from tests.support.proxy import TcpProxy
from tests.support.wait import wait_for

pytestmark = pytest.mark.fault
FAULTY = SERVICES


async def terminate_backends(databases: dict[str, str]) -> int:
    """pg_terminate_backend of every connection the services hold (named by application_name), busy or idle
    in a transaction first: whatever they were doing is rolled back."""
    names = [url.rsplit("/", 1)[1].split("?")[0] for url in databases.values()]
    conn = await asyncpg.connect(dsn("postgres"))
    try:
        return len(
            await conn.fetch(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE datname = ANY($1::text[]) AND application_name LIKE 'fault-%'
                   ORDER BY state IN ('active', 'idle in transaction') DESC""",
                names,
            )
        )
    finally:
        await conn.close()


async def busy_backends(databases: dict[str, str]) -> int:
    names = [url.rsplit("/", 1)[1] for url in databases.values()]
    conn = await asyncpg.connect(dsn("postgres"))
    try:
        return await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1::text[])
               AND application_name LIKE 'fault-%' AND state IN ('active', 'idle in transaction')""",
            names,
        )
    finally:
        await conn.close()


async def test_welcome_flows_survive_killed_connections_and_a_database_that_refuses_connections(
    processes, databases, http, tag, settle_and_check
):
    host_port = PG_URL.rsplit("@", 1)[1].split("/")[0]
    host, port = host_port.split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    system = processes(
        service_env={
            name: {
                f"{name.upper()}_DATABASE_URL": databases[name].replace(host_port, f"127.0.0.1:{proxy.port}")
                + f"?application_name=fault-{name}"
            }
            for name in FAULTY
        }
    )
    for name in SERVICES:
        system.start(name)
    await system.wait_ready()
    created: list[checks.Customer] = []
    driving = asyncio.create_task(
        checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=40, on_created=created.append)
    )
    killed = 0
    try:
        await wait_for(lambda: len(created) >= N // 5, timeout=30, what="customers created")
        for _ in range(3):
            # catch them at work: wait until some backend is inside a statement or a transaction
            await wait_for(lambda: busy_backends(databases), timeout=10, interval=0.01, what="a busy backend")
            killed += await terminate_backends(databases)
            await asyncio.sleep(0.3)
        await wait_for(lambda: len(created) >= N // 2, timeout=30, what="customers created")
        await proxy.cut()  # every connection dropped, and new ones refused...
        await asyncio.sleep(3)  # ...for three seconds
        await proxy.restore()
        await wait_for(lambda: len(created) >= 3 * N // 4, timeout=30, what="customers created")
        killed += await terminate_backends(databases)
        result = await driving
        assert killed > 0
        assert sum(result.errors.values()) > 0, "the faults never reached a client"
        await system.wait_ready()
        report = await settle_and_check(result.customers, system=system, timeout=90)
        print(f"backends killed: {killed}, client errors retried: {dict(result.errors)}")
        assert report.stats["welcome"] == N // 2
        # and every process still stops cleanly on SIGTERM after the faults
        codes = await system.astop()
        assert set(codes.values()) == {0}, codes
    finally:
        driving.cancel()
        await system.astop()
        await proxy.close()
