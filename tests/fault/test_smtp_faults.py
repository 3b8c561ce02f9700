"""Scenario 4: the mail server answers with temporary failures (4xx) for a while, and rejects some recipients
for good (5xx)."""

from __future__ import annotations

import asyncio

import pytest

from tests.fault import checks
from tests.fault.conftest import N
from tests.fault.system import SERVICES
from tests.support.wait import wait_for

pytestmark = pytest.mark.fault


async def test_temporary_smtp_failures_are_retried_and_rejected_recipients_are_recorded_as_failed(
    processes, http, tag, fault_smtp, settle_and_check
):
    # every tenth customer (all of them with the welcome flag) has an address the server refuses for good
    rejected = {f"c{i}-{tag}@example.com" for i in range(0, N, 10)}
    fault_smtp.behaviour.reject_recipients = rejected
    system = processes()
    for name in SERVICES:
        system.start(name)
    await system.wait_ready()
    driving = asyncio.create_task(checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=40))
    try:
        await wait_for(lambda: len(fault_smtp.messages) >= 10, timeout=30, what="the first emails")
        with fault_smtp.lock:
            fault_smtp.behaviour.temporary_failures = 10**6  # 451 to every message...
        await asyncio.sleep(3)  # ...for three seconds
        with fault_smtp.lock:
            fault_smtp.behaviour.temporary_failures = 0
        result = await driving
        assert fault_smtp.temporary_rejections > 0
        report = await settle_and_check(result.customers, system=system, rejected=rejected)
        assert report.stats["delivery_outcomes"] == {"sent": N // 2 - len(rejected), "failed": len(rejected)}
        print(f"451 answers: {fault_smtp.temporary_rejections}")
        # and every process still stops cleanly on SIGTERM after the faults
        codes = await system.astop()
        assert set(codes.values()) == {0}, codes
    finally:
        driving.cancel()
        await system.astop()
