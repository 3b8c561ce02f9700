"""Scenario 3: a consumer process is killed with SIGKILL in the middle of its work and started again: first
accounts (creating accounts and their welcome commands), then notifications (recording and sending emails)."""

from __future__ import annotations

import asyncio
import signal

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
    # short SMTP timeout and lease: a delivery whose outcome died with the process goes again after 12 s, not 60
    system = processes(
        service_env={"notifications": {"NOTIFICATIONS_SMTP_TIMEOUT_S": "3", "NOTIFICATIONS_DELIVERY_LEASE_S": "12"}}
    )
    for name in SERVICES:
        system.start(name)
    await system.wait_ready()
    accounts = await asyncpg.connect(databases["accounts"])
    notifications = await asyncpg.connect(databases["notifications"])
    driving = asyncio.create_task(checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=30))
    try:
        # accounts, once it has created some accounts
        await wait_for(
            lambda: _at_least(accounts.fetchval("SELECT count(*) FROM accounts"), N // 10),
            timeout=30,
            interval=0.02,
            what="accounts at work",
        )
        await kill_mid_batch(system, "accounts")
        system.start("accounts")
        # then notifications, once it has sent some emails
        await wait_for(
            lambda: _at_least(notifications.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'"), N // 5),
            timeout=30,
            interval=0.02,
            what="notifications at work",
        )
        await kill_mid_batch(system, "notifications")
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


async def kill_mid_batch(system, name: str) -> None:
    """Make sure the process has a batch in hand when it dies: SIGSTOP it for 2 s (the broker keeps delivering
    up to the prefetch limit, unacknowledged), SIGCONT so it works through the batch, and SIGKILL it 50 ms into
    that work: some messages committed and acked, some committed and not acked, some mid-transaction."""
    proc = system.procs[(name, 0)]
    proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(2)
    proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(0.05)
    system.kill(name)


async def _at_least(value, n: int) -> bool:
    return (await value) >= n
