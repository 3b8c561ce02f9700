"""Scenario 3: a consumer process is killed with SIGKILL in the middle of its work and started again: first
accounts (creating accounts and their welcome commands), then notifications (recording and sending emails)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.fault import checks
from tests.fault.conftest import N
from tests.fault.system import SERVICES
from tests.support.wait import wait_for

pytestmark = pytest.mark.fault


async def test_welcome_flows_survive_sigkill_of_accounts_then_notifications(
    processes, databases, http, tag, settle_and_check
):
    system = processes()
    for name in SERVICES:
        system.start(name)
    await system.wait_ready()
    accounts = await asyncpg.connect(databases["accounts"])
    notifications = await asyncpg.connect(databases["notifications"])
    driving = asyncio.create_task(checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=30))
    try:
        # accounts dies while it has created some accounts and has more to do
        await wait_for(
            lambda: _at_least(accounts.fetchval("SELECT count(*) FROM accounts"), N // 10),
            timeout=30,
            interval=0.02,
            what="accounts at work",
        )
        system.kill("accounts")
        await asyncio.sleep(0.5)
        system.start("accounts")
        # then notifications, once it has sent some emails and has deliveries in hand
        await wait_for(
            lambda: _at_least(notifications.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'"), N // 5),
            timeout=30,
            interval=0.02,
            what="notifications at work",
        )
        system.kill("notifications")
        await asyncio.sleep(0.5)
        system.start("notifications")
        result = await driving
        await system.wait_ready()
        # a delivery whose outcome died with the process is sent again when its lease ends (the documented
        # duplicate window): same Message-ID, so the check counts distinct messages for those
        report = await settle_and_check(result.customers, system=system, allow_resent=True, timeout=100)
        assert report.stats["welcome"] == N // 2
        # and every process still stops cleanly on SIGTERM after the faults
        codes = await system.astop()
        assert set(codes.values()) == {0}, codes
    finally:
        driving.cancel()
        await system.astop()
        await accounts.close()
        await notifications.close()


async def _at_least(value, n: int) -> bool:
    return (await value) >= n
