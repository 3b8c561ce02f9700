"""The example client's teams, credit and space access (examples/coworking_client) against the real services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from coworking_client import Access, ApiError, Client, CreditDraw, Customer, Team

from tests.examples.test_client import collect, unique_email


def today():
    return datetime.now(UTC).date()  # the test system's space time zone is UTC


async def a_member(api: Client, name: str) -> Customer:
    """An active member: a contract running today (on a plan without credit, so every grant here is by hand)."""
    customer = await api.create_customer(name, unique_email(name.split()[0].lower()))
    plan = await api.create_plan(f"Hot desk {uuid.uuid4().hex[:6]}", 19900, "EUR", "month")
    await api.create_contract(customer.id, plan.id, starts_on=today())
    assert (await api.get_customer(customer.id)).kind == "member"
    return customer


def access_of(access: Access) -> tuple[bool, str, uuid.UUID | None]:
    return access.granted, access.rule, access.team_id


async def test_a_team_shares_its_paying_members_booking_credit_and_space_access_with_a_contact(api):
    payer = await a_member(api, "Ada Lovelace")
    contact = await api.create_customer("Charles Babbage", unique_email("charles"))
    assert access_of(await api.get_access(contact.id)) == (False, "no_membership", None)

    team = await api.create_team(
        "Acme Ltd", paying_member_id=payer.id, share_booking_credit=True, share_access=True, max_size=5
    )
    assert isinstance(team, Team)
    assert (team.paying_member_id, team.member_count, team.share_printing_credit) == (payer.id, 1, False)
    joined = await api.add_team_member(team.id, contact.id)
    assert (joined.team_id, joined.customer_id, joined.role, joined.left_at) == (team.id, contact.id, "member", None)

    # space access: the contact through the team (its paying member is an active member), the payer as a member
    access = await api.get_access(contact.id)
    assert access_of(access) == (True, "team", team.id)
    assert access.explanation
    assert access_of(await api.get_access(payer.id)) == (True, "member", None)

    # booking credit: the contact's own balance first, then the paying member's
    assert (await api.grant_credit(payer.id, "booking", 10, reference="invoice 2027-001")).balance == 10
    assert (await api.grant_credit(contact.id, "booking", 2, note="welcome gift")).balance == 2
    await api.grant_credit(payer.id, "printing", 50)  # the team does not share printing credit
    credits = await api.get_credits(contact.id)
    assert (credits.booking.own, credits.booking.available) == (2, 12)
    assert (credits.printing.own, credits.printing.available) == (0, 0)

    used = await api.consume_credit(contact.id, "booking", 5, "meeting room 3", idempotency_key=str(uuid.uuid4()))
    assert (used.customer_id, used.kind, used.amount, used.own_balance_after) == (contact.id, "booking", 5, 0)
    assert used.paid_by == [
        CreditDraw(customer_id=contact.id, team_id=None, amount=2),
        CreditDraw(customer_id=payer.id, team_id=team.id, amount=3),
    ]
    payer_credits = await api.get_credits(payer.id)
    assert (payer_credits.booking.own, payer_credits.printing.own) == (7, 50)
    assert (await api.get_credits(contact.id)).booking.available == 7

    # more than is available: a 409 problem saying how much is, and nothing drawn
    with pytest.raises(ApiError) as short:
        await api.consume_credit(contact.id, "booking", 8, "meeting room 3", idempotency_key=str(uuid.uuid4()))
    assert (short.value.status, short.value.type) == (409, "urn:problem:insufficient-credit")
    assert short.value.problem.extensions["available"] == 7
    assert short.value.fields == ["amount"]
    with pytest.raises(ApiError) as not_shared:
        await api.consume_credit(contact.id, "printing", 1, "print job 42", idempotency_key=str(uuid.uuid4()))
    assert (not_shared.value.status, not_shared.value.problem.extensions) == (409, {"available": 0})
    assert (await api.get_credits(payer.id)).booking.own == 7
    assert (await api.get_credits(contact.id)).booking.available == 7


async def test_access_through_a_team_follows_its_members_and_its_share_access_switch(api):
    payer = await a_member(api, "Ada Lovelace")
    contact = await api.create_customer("Charles Babbage", unique_email("charles"))
    team = await api.create_team("Acme Ltd", paying_member_id=payer.id, share_access=True)
    await api.add_team_member(team.id, contact.id, role="admin")
    assert access_of(await api.get_access(contact.id)) == (True, "team", team.id)

    # leaving ends it; the dated roster still says who was in the team today
    await api.remove_team_member(team.id, contact.id)
    assert access_of(await api.get_access(contact.id)) == (False, "no_membership", None)
    assert [m.customer_id async for m in api.list_team_members(team.id)] == [payer.id]
    [was_payer, was_contact] = await collect(api.list_team_members(team.id, on=today()))
    assert (was_payer.customer_id, was_payer.left_at) == (payer.id, None)
    assert (was_contact.customer_id, was_contact.role) == (contact.id, "admin")
    assert was_contact.left_at is not None and was_contact.left_at >= was_contact.joined_at
    with pytest.raises(ApiError) as not_member:
        await api.remove_team_member(team.id, contact.id)
    assert not_member.value.status == 404

    # back in; then the team stops sharing access (If-Match with its version)
    await api.add_team_member(team.id, contact.id)
    assert access_of(await api.get_access(contact.id)) == (True, "team", team.id)
    team = await api.get_team(team.id)
    switched = await api.update_team(team.id, team.version, share_access=False)
    assert (switched.share_access, switched.version) == (False, team.version + 1)
    assert access_of(await api.get_access(contact.id)) == (False, "no_membership", None)
    assert access_of(await api.get_access(payer.id)) == (True, "member", None)
    with pytest.raises(ApiError) as stale:
        await api.update_team(team.id, team.version, share_access=True)
    assert stale.value.status == 412
    assert (await api.get_team(team.id)).share_access is False

    # sharing again, then the team deleted: access with it
    await api.update_team(team.id, share_access=True)
    assert access_of(await api.get_access(contact.id)) == (True, "team", team.id)
    await api.delete_team(team.id)
    assert access_of(await api.get_access(contact.id)) == (False, "no_membership", None)
    with pytest.raises(ApiError) as gone:
        await api.get_team(team.id)
    assert gone.value.status == 404


async def test_teams_are_listed_by_name_through_every_page_and_changed_and_deleted(api):
    prefix = f"Guild {uuid.uuid4().hex[:6]}"
    names = [f"{prefix} {letter}" for letter in "EDCBA"]
    teams = {name: await api.create_team(name, description="a guild", max_size=3) for name in names}

    listed = await collect(api.list_teams(q=prefix, page_size=2))
    assert [t.name for t in listed] == sorted(names)  # three pages of at most two
    assert [t.id for t in listed] == [teams[name].id for name in sorted(names)]
    assert await collect(api.list_teams(q=f"nothing {uuid.uuid4().hex}")) == []
    with pytest.raises(ApiError) as taken:
        await api.create_team(names[0].upper())
    assert (taken.value.status, taken.value.fields) == (409, ["name"])

    team = teams[names[0]]
    renamed = await api.update_team(team.id, team.version, name=f"{prefix} Z", max_size=None)
    assert (renamed.name, renamed.max_size, renamed.description) == (f"{prefix} Z", None, "a guild")
    assert await api.get_team(team.id) == renamed
    with pytest.raises(ApiError) as invalid:
        await api.update_team(team.id, colour="blue")
    assert (invalid.value.status, invalid.value.fields) == (422, ["colour"])

    await api.delete_team(team.id)
    assert team.id not in [t.id async for t in api.list_teams(q=prefix)]
    with pytest.raises(ApiError) as twice:
        await api.delete_team(team.id)
    assert twice.value.status == 404


async def test_a_consumption_retried_after_lost_answers_with_one_key_consumes_once(api, gateway):
    """Keys are per caller, so every call here uses the same token (the same account)."""
    url, lose = gateway
    customer = await api.create_customer("Ada Lovelace", unique_email())
    await api.grant_credit(customer.id, "booking", 10, idempotency_key=str(uuid.uuid4()), retries=2)
    path = f"/v1/customers/{customer.id}/credits/consumptions"
    key = str(uuid.uuid4())

    async with Client(url, token=api.token, retry_backoff_s=0.01) as through_gateway:
        lose[path] = 2  # consumed by the service, twice the answer lost on the way back
        consumed = await through_gateway.consume_credit(
            customer.id, "booking", 4, "meeting room 1", idempotency_key=key, retries=2
        )
        assert lose == {}
    assert (consumed.amount, consumed.own_balance_after) == (4, 6)
    assert (await api.get_credits(customer.id)).booking.own == 6

    again = await api.consume_credit(customer.id, "booking", 4, "meeting room 1", idempotency_key=key)
    assert again == consumed  # the first answer, replayed
    assert (await api.get_credits(customer.id)).booking.own == 6
    with pytest.raises(ApiError) as reused:
        await api.consume_credit(customer.id, "booking", 5, "meeting room 1", idempotency_key=key)
    assert (reused.value.status, reused.value.type) == (422, "urn:problem:idempotency-key-reused")

    lose[path] = 1
    async with Client(url, token=api.token, retry_backoff_s=0.01) as through_gateway:
        with pytest.raises(ApiError) as lost:  # no retries asked: the lost answer is the caller's to handle
            await through_gateway.consume_credit(
                customer.id, "booking", 1, "print job", idempotency_key=str(uuid.uuid4())
            )
    assert lost.value.status == 504
    assert (await api.get_credits(customer.id)).booking.own == 5
