"""Scenario 5: events and commands already published are published again (duplicates), and poison messages
(not JSON, failing the schema, an unknown version) are injected while customers are created."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import orjson
import pytest

from tests.fault import checks
from tests.fault.conftest import N
from tests.fault.system import SERVICES
from tests.support.bus import publish_raw
from tests.support.wait import wait_for

pytestmark = pytest.mark.fault


async def republish(amqp, prefix: str, dsn: str) -> int:
    """Publish again every message the service's outbox has published (same body, same message id)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT event_id, exchange, routing_key, body FROM outbox WHERE published_at IS NOT NULL ORDER BY id"
        )
    finally:
        await conn.close()
    for r in rows:
        await publish_raw(amqp, f"{prefix}{r['exchange']}", r["routing_key"], bytes(r["body"]), str(r["event_id"]))
    return len(rows)


def poison(sample: dict) -> dict[str, list[bytes]]:
    """{routing key: poison bodies}, made from a real customer.created and send_email."""
    created, command = sample["created"], sample["command"]
    no_email = {**created, "payload": {k: v for k, v in created["payload"].items() if k != "email"}}
    no_template = {**command, "payload": {k: v for k, v in command["payload"].items() if k != "template"}}
    return {
        "customers.customer.created.v1": [
            b'{"event_id": "not json',
            orjson.dumps(no_email),
            orjson.dumps({**created, "event_version": 9}),
        ],
        "notifications.send_email.v1": [b"\xff\xfe not json at all", orjson.dumps(no_template)],
    }


async def test_duplicates_have_no_second_effect_and_only_poison_reaches_the_dead_letter_queues(
    processes, databases, amqp, prefix, http, tag, settle_and_check
):
    system = processes()
    for name in SERVICES:
        system.start(name)
    await system.wait_ready()
    driving = asyncio.create_task(checks.drive_welcome(http, system.urls("customers"), n=N, tag=tag, rate=50))
    accounts = await asyncpg.connect(databases["accounts"])
    try:
        await wait_for(
            lambda: accounts.fetchval(
                "SELECT body FROM outbox WHERE published_at IS NOT NULL AND routing_key = 'notifications.send_email.v1'"
                " LIMIT 1"
            ),
            timeout=30,
            what="a published send_email command",
        )
        command = orjson.loads(
            await accounts.fetchval("SELECT body FROM outbox WHERE routing_key = 'notifications.send_email.v1' LIMIT 1")
        )
        customers = await asyncpg.connect(databases["customers"])
        try:
            created = orjson.loads(
                await customers.fetchval(
                    "SELECT body FROM outbox WHERE routing_key = 'customers.customer.created.v1' LIMIT 1"
                )
            )
        finally:
            await customers.close()
        bad = poison({"created": created, "command": command})
        for key, bodies in bad.items():
            exchange = f"{prefix}commands" if key.startswith("notifications.") else f"{prefix}events"
            for body in bodies:
                await publish_raw(amqp, exchange, key, body)
        # mid-flow: everything published so far, again
        copies = sum([await republish(amqp, prefix, databases[name]) for name in SERVICES])
        result = await driving
        await system.wait_ready()
        # and once more after the flow: every event and command of the run, a second (or third) time
        copies += sum([await republish(amqp, prefix, databases[name]) for name in SERVICES])
        created_poison = Counter(bad["customers.customer.created.v1"])
        report = await settle_and_check(
            result.customers,
            system=system,
            # customer.created goes to accounts and to visitors; send_email to notifications only
            expected_dead_letters={
                "accounts.customer-events": created_poison,
                "visitors.customer-events": created_poison,
                "notifications.send-email": Counter(bad["notifications.send_email.v1"]),
            },
        )
        print(f"copies published again: {copies}")
        assert copies > N
        assert report.stats["emails_received"] == N // 2
        # and every process still stops cleanly on SIGTERM after the faults
        codes = await system.astop()
        assert set(codes.values()) == {0}, codes
    finally:
        driving.cancel()
        await accounts.close()
        await system.astop()
