"""The visitors service's replica of the customers who can host visitors: whatever order the customer events
arrive in, each host ends as the newest event says."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.events import (
    CustomerBecameMemberV1,
    CustomerReactivatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
)
from tests.integration.test_accounts_lifecycle import customer_event
from tests.integration.test_messaging import body, customer_created
from tests.support.bus import publish_raw
from tests.support.wait import wait_for

CONSUMER = "visitors.customer-events"


@pytest.fixture
async def visitors(system_factory, amqp, prefix):
    system = system_factory()
    await system.start("visitors")
    db = system.runtime("visitors").db

    async def publish(*envelopes) -> None:
        """Deliver in this order: each is published once visitors has handled the one before."""
        for envelope in envelopes:
            await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
            await wait_for(
                lambda e=envelope: db.fetchval(
                    "SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = $2", CONSUMER, e.event_id
                ),
                what=f"visitors to handle {envelope.routing_key} (sequence {envelope.sequence})",
            )

    async def host(customer_id: str) -> dict[str, Any]:
        row = await db.fetchrow(
            "SELECT full_name, email, kind, standing FROM hosts WHERE customer_id = $1", uuid.UUID(customer_id)
        )
        assert row is not None, "the host is in the replica"
        return dict(row)

    return publish, host


async def test_standing_events_in_reverse_order_converge_to_the_newest(visitors):
    publish, host = visitors
    created = customer_created("host@example.com", send_welcome=False)
    cid = created.payload["customer_id"]
    await publish(created)
    assert (await host(cid))["standing"] == "active"

    # suspended (2), reactivated (3), suspended again (4), delivered newest first
    await publish(
        customer_event(CustomerSuspendedV1, cid, 4),
        customer_event(CustomerReactivatedV1, cid, 3),
        customer_event(CustomerSuspendedV1, cid, 2),
    )
    assert (await host(cid))["standing"] == "suspended"

    await publish(customer_event(CustomerReactivatedV1, cid, 5), customer_event(CustomerSuspendedV1, cid, 4))
    assert (await host(cid))["standing"] == "active"


async def test_events_before_created_are_kept_and_created_fills_in_the_name(visitors):
    publish, host = visitors
    created = customer_created("early@example.com", send_welcome=False, name="Early Bird")
    cid = created.payload["customer_id"]
    await publish(customer_event(CustomerSuspendedV1, cid, 3), customer_event(CustomerBecameMemberV1, cid, 2))
    assert await host(cid) == {"full_name": None, "email": None, "kind": "contact", "standing": "suspended"}
    await publish(created)
    assert await host(cid) == {
        "full_name": "Early Bird",
        "email": "early@example.com",
        "kind": "contact",
        "standing": "suspended",
    }


async def test_an_update_renames_the_host_even_when_it_arrives_after_a_newer_event(visitors):
    publish, host = visitors
    created = customer_created("rename@example.com", send_welcome=False, name="Ada Lovelace")
    cid = created.payload["customer_id"]
    await publish(created)

    def updated(sequence: int, name: str, email: str):
        return customer_event(
            CustomerUpdatedV1,
            cid,
            sequence,
            full_name=name,
            email=email,
            changes={"full_name": {"old": "Ada Lovelace", "new": name}},
        )

    await publish(updated(2, "Ada King", "rename@example.com"))
    assert (await host(cid))["full_name"] == "Ada King"

    # renamed again (4), then became a member (5); the member event is delivered first, the rename last
    await publish(
        customer_event(CustomerBecameMemberV1, cid, 5),
        updated(4, "Ada, Countess of Lovelace", "countess@example.com"),
        updated(3, "A stale name", "stale@example.com"),
    )
    assert await host(cid) == {
        "full_name": "Ada, Countess of Lovelace",
        "email": "countess@example.com",
        "kind": "member",
        "standing": "active",
    }
