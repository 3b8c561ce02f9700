"""Scenario 6: two replicas of every service (their relays, schedulers, consumers and dispatchers included) run
side by side, with requests spread over both customers replicas."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fault import checks
from tests.fault.conftest import N
from tests.fault.system import SERVICES

pytestmark = pytest.mark.fault


async def handled(url: str, queue: str) -> float:
    """Messages this replica's consumer handled (its Prometheus counter)."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("events_consumed_total{") and f'queue="{queue}"' in line and 'outcome="handled"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_replicas_of_every_service_share_the_work_without_doing_anything_twice(
    processes, http, tag, settle_and_check
):
    system = processes()
    for replica in (0, 1):
        for name in SERVICES:
            system.start(name, replica)
    await system.wait_ready()
    try:
        result = await checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=50)
        report = await settle_and_check(result.customers, system=system)
        assert report.stats["emails_received"] == N // 2
        # both replicas took part: the broker spread each queue over both consumers
        for queue, service in (("accounts.customer-events", "accounts"), ("visitors.customer-events", "visitors")):
            shares = [await handled(url, queue) for url in system.urls(service)]
            assert all(s > 0 for s in shares) and sum(shares) >= N, (queue, shares)
        # and every process still stops cleanly on SIGTERM after the faults
        codes = await system.astop()
        assert set(codes.values()) == {0}, codes
    finally:
        await system.astop()
