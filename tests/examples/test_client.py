"""The example client (examples/coworking_client) against the real services: what an integrator would write."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from coworking_client import ApiError, Client, Customer, VisitorIn

from tests.integration.test_notifications import text_and_html
from tests.support.wait import wait_for

PASSWORD = "a long enough passphrase"


def unique_email(name: str = "ada") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


async def collect(iterator) -> list:
    return [item async for item in iterator]


async def sent_deliveries(api: Client, customer_id: uuid.UUID) -> list:
    return [d for d in await collect(api.list_deliveries(customer_id=customer_id)) if d.status == "sent"]


async def test_creating_a_customer_with_welcome_twice_with_one_idempotency_key_makes_one_customer_and_one_email(
    api, smtp
):
    email, key = unique_email(), str(uuid.uuid4())
    first = await api.create_customer("Ada Lovelace", email, send_welcome=True, idempotency_key=key)
    again = await api.create_customer("Ada Lovelace", email, send_welcome=True, idempotency_key=key)

    assert isinstance(first, Customer)
    assert again == first
    assert (first.kind, first.standing, first.version) == ("contact", "active", 1)
    assert [c.id async for c in api.list_customers(email=email)] == [first.id]
    [delivery] = await wait_for(lambda: sent_deliveries(api, first.id), what="the welcome delivery, sent")
    assert (delivery.template, delivery.to_email) == ("welcome", email)
    assert len(smtp.to(email)) == 1
    with pytest.raises(ApiError) as reused:
        await api.create_customer("Someone Else", email, idempotency_key=key)
    assert reused.value.status == 422
    assert reused.value.type == "urn:problem:idempotency-key-reused"


async def test_the_welcome_link_activates_the_account_and_the_person_logs_in_and_reads_their_profile(api, system, smtp):
    email = unique_email("grace")
    customer = await api.create_customer("Grace Hopper", email, send_welcome=True)
    [message] = await wait_for(lambda: smtp.to(email), what="the welcome email")
    link = re.search(r"http://portal\.test/activate#token=(\S+)", text_and_html(message)[0])
    assert link, "the welcome email carries the set-password link"

    async with Client(dict(system.urls)) as person:
        activated = await person.activate(link.group(1), PASSWORD)
        assert activated.status == "active"
        with pytest.raises(ApiError) as used:
            await person.activate(link.group(1), PASSWORD)
        assert used.value.status == 400
        grant = await person.login(email, PASSWORD)
        assert (grant.token_type, person.token) == ("Bearer", grant.access_token)
        me = await person.get_customer(customer.id)
        assert (me.id, me.portal_access) == (customer.id, "active")
        with pytest.raises(ApiError) as other:
            await person.get_customer(uuid.uuid4())
        assert other.value.status == 404
        with pytest.raises(ApiError) as wrong:
            await person.login(email, "not the password at all")
        assert wrong.value.status == 401


async def test_listing_follows_next_cursor_through_every_page(api):
    company = f"Analytical Engines {uuid.uuid4().hex[:6]}"
    names = [f"Person {n}" for n in "ABCDE"]
    for name in names:
        await api.create_customer(name, unique_email(), company_name=company)

    listed = await collect(api.list_customers(q=company, sort="full_name", page_size=2))

    assert [c.full_name for c in listed] == names  # three pages of at most two
    assert [c.full_name async for c in api.list_customers(q=company, sort="-full_name", page_size=200)] == names[::-1]
    assert await collect(api.list_customers(q=f"nobody {uuid.uuid4().hex}")) == []


async def test_an_update_with_the_current_version_applies_and_one_with_a_stale_version_is_a_412_problem(api):
    customer = await api.create_customer("Ada Lovelace", unique_email())

    updated = await api.update_customer(customer.id, customer.version, phone="+44 20 7946 0000")
    assert (updated.phone, updated.version) == ("+44 20 7946 0000", customer.version + 1)

    with pytest.raises(ApiError) as stale:
        await api.update_customer(customer.id, customer.version, full_name="Ada King")
    assert stale.value.status == stale.value.problem.status == 412
    assert stale.value.problem.title
    assert (await api.get_customer(customer.id)).full_name == "Ada Lovelace"


async def test_invalid_fields_are_a_422_whose_errors_name_each_field(api):
    with pytest.raises(ApiError) as invalid:
        await api.create_customer("Ada Lovelace", "not an email", phone="call me")
    assert invalid.value.status == 422
    assert set(invalid.value.fields) == {"email", "phone"}
    assert all(error.message for error in invalid.value.problem.errors)
    assert "email" in str(invalid.value)

    customer = await api.create_customer("Ada Lovelace", unique_email())
    with pytest.raises(ApiError) as unknown:
        await api.update_customer(customer.id, customer.version, nickname="Ada")
    assert (unknown.value.status, unknown.value.fields) == (422, ["nickname"])


async def test_a_customer_is_suspended_and_reactivated(api):
    customer = await api.create_customer("Ada Lovelace", unique_email())

    suspended = await api.suspend(customer.id, "Unpaid invoices", category="overdue")
    assert (suspended.customer.id, suspended.customer.standing) == (customer.id, "suspended")
    with pytest.raises(ApiError) as twice:
        await api.suspend(customer.id, "Again")
    assert twice.value.status == 409

    reactivated = await api.reactivate(customer.id)
    assert reactivated.standing == "active"
    assert reactivated.version > suspended.customer.version
    with pytest.raises(ApiError) as not_suspended:
        await api.reactivate(customer.id)
    assert not_suspended.value.status == 409


async def test_a_contract_running_today_makes_a_member_and_cancelling_it_before_its_start_a_contact_again(api):
    customer = await api.create_customer("Ada Lovelace", unique_email())
    plan = await api.create_plan(f"Hot desk {uuid.uuid4().hex[:6]}", 19900, "EUR", "month", booking_credit=10)
    assert (plan.status, plan.billing_period) == ("active", "month")
    today = datetime.now(UTC).date()

    contract = await api.create_contract(customer.id, plan.id, starts_on=today, ends_on=today + timedelta(days=30))
    assert (contract.status, contract.customer_id) == ("active", customer.id)
    assert (await api.get_customer(customer.id)).kind == "member"

    cancelled = await api.cancel_contract(contract.id, ends_on=today - timedelta(days=1), reason="Changed plans")
    assert cancelled.status == "cancelled"
    assert cancelled.cancellation is not None and cancelled.cancellation.reason == "Changed plans"
    assert (await api.get_customer(customer.id)).kind == "contact"


async def test_requesting_a_user_account_sends_the_welcome_email_once(api, smtp):
    email = unique_email("alan")
    customer = await api.create_customer("Alan Turing", email)
    assert customer.portal_access == "none"

    requested = await api.request_user_account(customer.id)
    assert (requested.customer_id, requested.portal_access) == (customer.id, "requested")
    with pytest.raises(ApiError) as again:
        await api.request_user_account(customer.id)
    assert again.value.status == 409
    await wait_for(lambda: sent_deliveries(api, customer.id), what="the welcome delivery, sent")
    assert len(smtp.to(email)) == 1


async def test_a_visit_is_registered_and_checked_in_with_the_kiosk_code(system, keys):
    await system.start("visitors")
    async with Client(dict(system.urls), token=keys.token()) as api:
        visit = await api.register_visit(
            VisitorIn(full_name="Charles Babbage", email=unique_email("charles")),
            "tour",
            datetime.now(UTC) + timedelta(hours=1),
            idempotency_key=str(uuid.uuid4()),
        )
        assert (visit.status, visit.host_customer_id, len(visit.check_in_code)) == ("expected", None, 6)

        checked_in = await api.check_in(code=visit.check_in_code.lower())
        assert (checked_in.id, checked_in.status) == (visit.id, "checked_in")
        with pytest.raises(ApiError) as again:
            await api.check_in(visit.id)
        assert again.value.status == 409
        with pytest.raises(ValueError):
            await api.check_in()


# the opt-in retry of a creating POST, through a gateway that loses an answer (conftest.gateway) -------------


async def test_a_lost_answer_is_not_retried_unless_asked_and_then_the_retry_replays_the_first_creation(gateway, keys):
    url, lose = gateway
    async with Client(url, token=keys.token(), retry_backoff_s=0.01) as api:
        email, key = unique_email(), str(uuid.uuid4())
        lose["/v1/customers"] = 1
        with pytest.raises(ApiError) as lost:
            await api.create_customer("Ada Lovelace", email, idempotency_key=key)
        assert (lost.value.status, lost.value.problem.title) == (504, "Gateway Timeout")
        created = [c async for c in api.list_customers(email=email)]
        assert len(created) == 1, "the first attempt did create the customer"
        replayed = await api.create_customer("Ada Lovelace", email, idempotency_key=key)
        assert replayed.id == created[0].id

        other = unique_email("grace")
        lose["/v1/customers"] = 2
        customer = await api.create_customer("Grace Hopper", other, retries=2)  # a key is generated for it
        assert [c.id async for c in api.list_customers(email=other)] == [customer.id]
        assert lose == {}
