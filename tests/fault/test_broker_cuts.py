"""Scenario 1: every service's RabbitMQ connection is cut several times while customers are created."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import AMQP_URL
from tests.fault import checks
from tests.fault.conftest import N
from tests.fault.system import SERVICES
from tests.support.proxy import TcpProxy
from tests.support.wait import wait_for

pytestmark = pytest.mark.fault


async def test_welcome_flows_survive_repeated_broker_connection_cuts(processes, http, tag, settle_and_check):
    proxies = {name: TcpProxy("127.0.0.1", 5672) for name in SERVICES}
    for p in proxies.values():
        await p.start()
    system = processes(
        service_env={
            name: {"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{p.port}/?reconnect_interval=0.3"}
            for name, p in proxies.items()
        }
    )
    assert AMQP_URL.endswith(":5672/")
    for name in SERVICES:
        system.start(name)
    await system.wait_ready()
    created: list[checks.Customer] = []
    driving = asyncio.create_task(
        checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=40, on_created=created.append)
    )
    try:
        for round_ in range(3):
            # each round waits for the flow to be under way, then cuts every service's connection in turn
            await wait_for(lambda r=round_: len(created) >= (r + 1) * N // 5, timeout=30, what="customers created")
            for proxy in proxies.values():
                await proxy.cut()
                await asyncio.sleep(0.4)
                await proxy.restore()
        result = await driving
        await system.wait_ready()  # every consumer attached again
        report = await settle_and_check(result.customers, system=system)
        assert report.stats["welcome"] == N // 2
        # and every process still stops cleanly on SIGTERM after the faults
        codes = await system.astop()
        assert set(codes.values()) == {0}, codes
    finally:
        driving.cancel()
        await system.astop()
        for p in proxies.values():
            await p.close()
