"""Accounts follow their customer's lifecycle: suspension and reactivation, member or contact, a new email, an
account asked for later. Customer events may arrive out of order or twice; the account always ends as the
newest event says, and announces each real change once."""

from __future__ import annotations

import re
import uuid
from typing import Any

import aiohttp
import jwt
import pytest

from shared.events import (
    CustomerBecameContactV1,
    CustomerBecameMemberV1,
    CustomerReactivatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    CustomerUserAccountRequestedV1,
    Message,
    make_envelope,
)
from tests.integration.test_accounts import PASSWORD, activate, login
from tests.integration.test_messaging import body, customer_created
from tests.integration.test_notifications import text_and_html
from tests.support.bus import EventRecorder, drain, publish_raw, queue_depth
from tests.support.wait import wait_for

CONSUMER = "accounts.customer-events"


def customer_event(model: type[Message], customer_id: str, sequence: int, **fields: Any):
    """An envelope of a customers.customer.* event about ``customer_id`` at the customer's version ``sequence``."""
    defaults: dict[str, Any] = {"customer_id": customer_id, "kind": "contact", "standing": "active"}
    if model is CustomerSuspendedV1:
        defaults |= {"suspension_id": uuid.uuid4(), "category": "overdue", "reason": "unpaid invoice"}
        defaults["standing"] = "suspended"
    elif model is CustomerReactivatedV1:
        defaults |= {"suspension_id": uuid.uuid4(), "by": "operator"}
    elif model is CustomerBecameMemberV1:
        defaults |= {"contract_id": uuid.uuid4(), "kind": "member"}
    elif model is CustomerBecameContactV1:
        defaults |= {"contract_id": uuid.uuid4()}
    return make_envelope(
        model.model_validate(defaults | fields), subject=customer_id, sequence=sequence, producer="customers"
    )


@pytest.fixture
async def lifecycle(system_factory, amqp, prefix, smtp, keys):
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port)
    await system.start("accounts", "notifications")
    accounts_db = system.runtime("accounts").db

    async def publish(*envelopes) -> None:
        """Deliver in this order: each is published once accounts has handled the one before."""
        for envelope in envelopes:
            await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
            await wait_for(
                lambda e=envelope: accounts_db.fetchval(
                    "SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = $2", CONSUMER, e.event_id
                ),
                what=f"accounts to handle {envelope.routing_key} (sequence {envelope.sequence})",
            )

    async def invite(email: str) -> tuple[str, str]:
        """A customer (contact, active, version 1) with an invited account; returns its id and the token."""
        envelope = customer_created(email)
        await publish(envelope)
        [message] = await wait_for(lambda: smtp.to(email), what=f"the welcome email to {email}")
        token = re.search(r"#token=(\S+)", text_and_html(message)[0])
        assert token
        return envelope.payload["customer_id"], token.group(1)

    async def active_customer(email: str) -> str:
        customer_id, token = await invite(email)
        assert (await activate(http, token)).status == 200
        return customer_id

    async def account(customer_id: str) -> dict[str, Any]:
        resp = await http.get("/v1/accounts", params={"customer_id": customer_id}, headers=admin)
        [item] = (await resp.json())["items"]
        return item

    async def claims(email: str) -> dict[str, Any]:
        resp = await login(http, email)
        assert resp.status == 200, await resp.text()
        return jwt.decode((await resp.json())["access_token"], options={"verify_signature": False})

    def announced(routing_key: str, customer_id: str) -> list[dict[str, Any]]:
        return [e for e in recorder.of_type(routing_key) if e["payload"]["customer_id"] == customer_id]

    async def outbox(routing_key: str) -> int:
        """Events accounts decided to publish (committed with the change, whether or not relayed yet)."""
        return await accounts_db.fetchval("SELECT count(*) FROM outbox WHERE routing_key = $1", routing_key)

    admin = {"Authorization": f"Bearer {keys.token()}"}
    async with aiohttp.ClientSession(base_url=system.urls["accounts"]) as http:
        yield {
            "system": system,
            "http": http,
            "publish": publish,
            "invite": invite,
            "active_customer": active_customer,
            "account": account,
            "claims": claims,
            "announced": announced,
            "outbox": outbox,
        }


async def test_suspended_and_reactivated_delivered_in_reverse_order_leave_the_account_active(lifecycle):
    t = lifecycle
    cid = await t["active_customer"]("reverse@example.com")
    # the customer was suspended (version 2) then reactivated (version 3); the broker delivers them reversed
    await t["publish"](
        customer_event(CustomerReactivatedV1, cid, 3),
        customer_event(CustomerSuspendedV1, cid, 2),
    )
    assert (await t["account"](cid))["status"] == "active"
    assert (await t["claims"]("reverse@example.com"))["standing"] == "active"
    # the account never changed, so it announced nothing
    assert await t["outbox"]("accounts.account.suspended.v1") == 0
    assert await t["outbox"]("accounts.account.reactivated.v1") == 0


async def test_a_suspended_account_logs_in_suspended_and_each_status_change_is_announced_once(lifecycle):
    t = lifecycle
    cid = await t["active_customer"]("inorder@example.com")  # account version 2 (created, activated)

    await t["publish"](customer_event(CustomerSuspendedV1, cid, 2))
    assert (await t["account"](cid))["status"] == "suspended"
    token = await t["claims"]("inorder@example.com")
    assert token["standing"] == "suspended"
    [suspended] = await wait_for(
        lambda: t["announced"]("accounts.account.suspended.v1", cid), what="accounts.account.suspended.v1"
    )
    assert suspended["sequence"] == 3
    assert suspended["subject"] == token["sub"]
    assert (suspended["payload"]["status"], suspended["payload"]["role"]) == ("suspended", "contact")

    await t["publish"](customer_event(CustomerReactivatedV1, cid, 3))
    assert (await t["account"](cid))["status"] == "active"
    assert (await t["claims"]("inorder@example.com"))["standing"] == "active"
    [reactivated] = await wait_for(
        lambda: t["announced"]("accounts.account.reactivated.v1", cid), what="accounts.account.reactivated.v1"
    )
    assert (reactivated["sequence"], reactivated["payload"]["status"]) == (4, "active")

    # a stale suspension (an older version, delivered again with a new event id) changes nothing
    await t["publish"](customer_event(CustomerSuspendedV1, cid, 2))
    assert (await t["account"](cid))["status"] == "active"
    assert await t["outbox"]("accounts.account.suspended.v1") == 1
    assert await t["outbox"]("accounts.account.reactivated.v1") == 1


async def test_becoming_a_member_changes_the_role_and_a_stale_became_contact_does_not_undo_it(lifecycle):
    t = lifecycle
    cid = await t["active_customer"]("member@example.com")
    await t["publish"](
        customer_event(CustomerBecameMemberV1, cid, 3),
        customer_event(CustomerBecameContactV1, cid, 2),  # older: the contract before ended
    )
    assert (await t["account"](cid))["role"] == "member"
    assert (await t["claims"]("member@example.com"))["role"] == "member"
    [changed] = await wait_for(
        lambda: t["announced"]("accounts.account.role_changed.v1", cid), what="accounts.account.role_changed.v1"
    )
    assert changed["sequence"] == 3
    assert changed["payload"] | {"account_id": None, "customer_id": None} == {
        "account_id": None,
        "customer_id": None,
        "role": "member",
        "previous_role": "contact",
        "status": "active",
    }
    assert await t["outbox"]("accounts.account.role_changed.v1") == 1


async def test_a_stale_became_member_does_not_undo_a_newer_suspension(lifecycle):
    t = lifecycle
    cid = await t["active_customer"]("late-member@example.com")
    await t["publish"](
        customer_event(CustomerSuspendedV1, cid, 4),  # after becoming a member (3), then a contact again
        customer_event(CustomerBecameMemberV1, cid, 3),
    )
    account = await t["account"](cid)
    assert (account["status"], account["role"]) == ("suspended", "contact")
    assert await t["outbox"]("accounts.account.role_changed.v1") == 0


async def test_an_invited_account_of_a_suspended_customer_is_suspended_once_activated(lifecycle):
    t = lifecycle
    cid, token = await t["invite"]("invited-suspended@example.com")
    await t["publish"](customer_event(CustomerSuspendedV1, cid, 2))
    assert (await t["account"](cid))["status"] == "invited"  # nothing to suspend yet
    resp = await activate(t["http"], token)
    assert resp.status == 200
    assert (await resp.json())["status"] == "suspended"
    assert (await t["account"](cid))["status"] == "suspended"
    assert (await t["claims"]("invited-suspended@example.com"))["standing"] == "suspended"
    [activated] = await wait_for(
        lambda: t["announced"]("accounts.account.activated.v1", cid), what="accounts.account.activated.v1"
    )
    [suspended] = await wait_for(
        lambda: t["announced"]("accounts.account.suspended.v1", cid), what="accounts.account.suspended.v1"
    )
    assert (activated["sequence"], suspended["sequence"]) == (2, 3)

    # when the customer is reactivated, so is the account
    await t["publish"](customer_event(CustomerReactivatedV1, cid, 3))
    assert (await t["claims"]("invited-suspended@example.com"))["standing"] == "active"


async def test_a_new_customer_email_becomes_the_login_email(lifecycle):
    t = lifecycle
    cid = await t["active_customer"]("old@example.com")
    await t["publish"](
        customer_event(
            CustomerUpdatedV1,
            cid,
            2,
            full_name="Ada King",
            email="new@example.com",
            changes={
                "email": {"old": "old@example.com", "new": "new@example.com"},
                "full_name": {"old": "Ada Lovelace", "new": "Ada King"},
            },
        )
    )
    assert (await login(t["http"], "new@example.com")).status == 200
    assert (await login(t["http"], "old@example.com")).status == 401
    account = await t["account"](cid)
    assert (account["email"], account["full_name"]) == ("new@example.com", "Ada King")


async def test_an_email_change_arriving_after_a_newer_event_still_applies(lifecycle):
    t = lifecycle
    cid = await t["active_customer"]("before@example.com")
    await t["publish"](
        customer_event(CustomerSuspendedV1, cid, 3),
        customer_event(CustomerUpdatedV1, cid, 2, full_name="Ada Lovelace", email="after@example.com", changes={}),
    )
    assert (await t["claims"]("after@example.com"))["standing"] == "suspended"
    assert (await login(t["http"], "before@example.com")).status == 401


async def test_an_email_taken_by_another_account_is_dead_lettered_and_both_logins_keep_working(lifecycle, amqp, prefix):
    t = lifecycle
    await t["active_customer"]("first@example.com")
    cid = await t["active_customer"]("second@example.com")
    update = customer_event(CustomerUpdatedV1, cid, 2, full_name="Second", email="FIRST@example.com", changes={})
    await publish_raw(amqp, f"{prefix}events", update.routing_key, body(update), str(update.event_id))
    dlq = f"{prefix}{CONSUMER}.dlq"
    await wait_for(lambda: queue_depth(amqp, dlq), what="the update in the dead-letter queue")
    [dead] = await drain(amqp, dlq)
    assert "another account already uses the new email address" in dead.headers["x-dead-letter-reason"]
    assert (await login(t["http"], "first@example.com")).status == 200
    assert (await login(t["http"], "second@example.com")).status == 200


async def test_an_account_requested_later_is_created_once_with_one_welcome_email(lifecycle, smtp):
    t = lifecycle
    created = customer_created("later@example.com", send_welcome=False)
    cid = created.payload["customer_id"]
    request = {"full_name": "Later Person", "email": "later@example.com", "kind": "member"}
    await t["publish"](created, customer_event(CustomerUserAccountRequestedV1, cid, 2, **request))
    [message] = await wait_for(lambda: smtp.to("later@example.com"), what="the welcome email")
    account = await t["account"](cid)
    assert (account["status"], account["role"], account["email"]) == ("invited", "member", "later@example.com")

    # the same request again (the operator clicked twice: a new event id): no second account, no second email
    await t["publish"](customer_event(CustomerUserAccountRequestedV1, cid, 3, **request))
    accounts_db = t["system"].runtime("accounts").db
    assert await accounts_db.fetchval("SELECT count(*) FROM accounts WHERE customer_id = $1", uuid.UUID(cid)) == 1
    assert await accounts_db.fetchval("SELECT count(*) FROM invitations") == 1
    assert await t["outbox"]("notifications.send_email.v1") == 1
    [created_event] = await wait_for(
        lambda: t["announced"]("accounts.account.created.v1", cid), what="accounts.account.created.v1"
    )
    assert created_event["payload"]["role"] == "member"

    token = re.search(r"#token=(\S+)", text_and_html(message)[0])
    assert token
    assert (await activate(t["http"], token.group(1))).status == 200
    assert (await login(t["http"], "later@example.com", PASSWORD)).status == 200
    assert len(smtp.to("later@example.com")) == 1
