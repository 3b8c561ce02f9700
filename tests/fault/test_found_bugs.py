"""Regression tests for what the fault suite found, small enough to say exactly what went wrong."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from shared.events import (
    CustomerCreatedV1,
    CustomerErasedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    make_envelope,
)
from shared.events.customers import FieldChange
from tests.support.bus import publish_raw
from tests.support.wait import wait_for

pytestmark = pytest.mark.fault


async def publish(amqp, prefix: str, message, customer_id: uuid.UUID, sequence: int) -> str:
    env = make_envelope(message, subject=customer_id, sequence=sequence, producer="customers", correlation_id="t")
    await publish_raw(
        amqp, f"{prefix}events", env.routing_key, orjson.dumps(env.model_dump(mode="json")), str(env.event_id)
    )
    return str(env.event_id)


async def handled(db, event_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", uuid.UUID(event_id)))


async def test_an_update_handled_before_the_created_event_still_reaches_the_account(system_factory, amqp, prefix):
    """accounts handles messages concurrently and retries reorder them: a welcome customer renamed and re-emailed
    (then suspended) right after creation kept the old name and email (the login email!) in accounts, because the
    update found no account yet and was dropped."""
    system = system_factory()
    await system.start("accounts")
    db = system.runtime("accounts").db
    cid = uuid.uuid4()
    updated = CustomerUpdatedV1(
        customer_id=cid,
        kind="contact",
        standing="active",
        changes={"email": FieldChange(old="typo@example.con", new="right@example.com")},
        full_name="Ada Lovelace",
        email="right@example.com",
    )
    suspended = CustomerSuspendedV1(
        customer_id=cid,
        kind="contact",
        standing="suspended",
        suspension_id=uuid.uuid4(),
        reason="r",
        category="manual",
        until=None,
    )
    for message, sequence in ((suspended, 3), (updated, 2)):
        event_id = await publish(amqp, prefix, message, cid, sequence)
        await wait_for(lambda e=event_id: handled(db, e), what="the early event handled")
    created = CustomerCreatedV1(
        customer_id=cid,
        full_name="Ada Lovelase",
        email="typo@example.con",
        kind="contact",
        standing="active",
        send_welcome=True,
    )
    event_id = await publish(amqp, prefix, created, cid, 1)
    await wait_for(lambda: handled(db, event_id), what="customer.created handled")
    account = await db.fetchrow("SELECT * FROM accounts WHERE customer_id = $1", cid)
    assert (account["email"], account["full_name"]) == ("right@example.com", "Ada Lovelace")
    assert (account["customer_sequence"], account["customer_standing"]) == (3, "suspended")
    assert await db.fetchval("SELECT count(*) FROM customer_facts") == 0


async def test_facts_kept_for_a_customer_without_an_account_go_with_the_erasure(system_factory, amqp, prefix):
    system = system_factory()
    await system.start("accounts")
    db = system.runtime("accounts").db
    cid = uuid.uuid4()
    updated = CustomerUpdatedV1(
        customer_id=cid, kind="contact", standing="active", changes={}, full_name="Quiet", email="quiet@example.com"
    )
    event_id = await publish(amqp, prefix, updated, cid, 2)
    await wait_for(lambda: handled(db, event_id), what="the update handled")
    assert await db.fetchval("SELECT email FROM customer_facts WHERE customer_id = $1", cid) == "quiet@example.com"
    event_id = await publish(amqp, prefix, CustomerErasedV1(customer_id=cid, erased_at=datetime.now(UTC)), cid, 3)
    await wait_for(lambda: handled(db, event_id), what="the erasure handled")
    assert await db.fetchval("SELECT count(*) FROM customer_facts") == 0
