"""The customer lifecycle as operators drive it and time moves it: plans, contracts, member/contact derived from
them, suspension, editing, the create-user-account action, history, and every event each change causes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from services.customers.app import SCHEDULER
from shared.clock import FakeClock
from tests.support.api import CustomersApi
from tests.support.bus import EventRecorder
from tests.support.wait import ticks_pass, wait_for

START = datetime(2027, 3, 10, 9, 0, tzinfo=UTC)
TODAY = START.date()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


class Api(CustomersApi):
    async def call(self, method: str, path: str, expect: int | None = None, **kw):
        return await self.request(method, path, expect, **kw)

    async def contract(self, customer_id: str, plan_id: str, starts: str, ends: str | None = None) -> dict:
        _, body, _ = await self.call(
            "POST",
            f"/v1/customers/{customer_id}/contracts",
            201,
            json={"plan_id": plan_id, "starts_on": starts, "ends_on": ends},
        )
        return body

    async def get(self, customer_id: str) -> dict:
        return (await self.call("GET", f"/v1/customers/{customer_id}", 200))[1]


@pytest.fixture
async def env(system_factory, amqp, prefix, keys):
    clock = FakeClock(START)
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(clock=clock)
    await system.start("customers")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        yield Api(http, system.urls["customers"]), clock, recorder, system


def events(recorder, key: str, customer_id: str | None = None) -> list[dict]:
    found = recorder.of_type(key)
    if customer_id is not None:
        found = [e for e in found if e["payload"].get("customer_id") == customer_id]
    return found


async def test_plans_are_created_listed_unique_by_name_and_archived_once(env):
    api, *_ = env
    plan = await api.plan("Fixed desk")
    assert (plan["status"], plan["price_minor"], plan["currency"]) == ("active", 19900, "EUR")
    status, problem, _ = await api.call(
        "POST", "/v1/plans", json={"name": "fixed DESK", "price_minor": 1, "currency": "EUR", "billing_period": "month"}
    )
    assert status == 409 and problem["errors"][0]["field"] == "name"
    status, problem, _ = await api.call(
        "POST", "/v1/plans", json={"name": "X", "price_minor": -1, "currency": "euro", "billing_period": "fortnight"}
    )
    assert status == 422
    assert {e["field"] for e in problem["errors"]} == {"price_minor", "currency", "billing_period"}
    await api.call("POST", f"/v1/plans/{plan['id']}/archive", 200)
    await api.call("POST", f"/v1/plans/{plan['id']}/archive", 409)
    _, listed, _ = await api.call("GET", "/v1/plans", 200, params={"status": "archived"})
    assert [p["id"] for p in listed["items"]] == [plan["id"]]
    customer = await api.customer()
    status, problem, _ = await api.call(
        "POST", f"/v1/customers/{customer['id']}/contracts", json={"plan_id": plan["id"], "starts_on": day(0)}
    )
    assert status == 422 and problem["errors"][0]["field"] == "plan_id"


async def test_a_contract_running_today_makes_a_contact_a_member_at_once(env):
    api, _, recorder, _ = env
    customer = await api.customer()
    plan = await api.plan()
    contract = await api.contract(customer["id"], plan["id"], day(0), day(30))
    assert contract["status"] == "active"
    assert (await api.get(customer["id"]))["kind"] == "member"
    [started] = await wait_for(
        lambda: events(recorder, "customers.contract.started.v1", customer["id"]), what="started"
    )
    assert started["payload"]["contract_id"] == contract["id"]
    [became] = await wait_for(
        lambda: events(recorder, "customers.customer.became_member.v1", customer["id"]), what="became_member"
    )
    assert became["payload"]["contract_id"] == contract["id"]
    assert became["sequence"] == 2  # created = 1


async def test_time_moves_a_future_contract_to_active_and_then_ended_and_the_member_back_to_contact(env):
    api, clock, recorder, system = env
    customer = await api.customer()
    plan = await api.plan()
    contract = await api.contract(customer["id"], plan["id"], day(5), day(10))
    assert contract["status"] == "scheduled"
    assert (await api.get(customer["id"]))["kind"] == "contact"

    clock.advance(days=5)
    await wait_for(lambda: _kind(api, customer["id"], "member"), what="member on the start date")
    clock.advance(days=5)  # the last day: still a member
    await ticks_pass(lambda: system.apps["customers"][SCHEDULER].ticks, what="scheduler ticks")
    assert (await api.get(customer["id"]))["kind"] == "member"
    clock.advance(days=1)
    await wait_for(lambda: _kind(api, customer["id"], "contact"), what="contact the day after the last day")
    [ended] = await wait_for(lambda: events(recorder, "customers.contract.ended.v1", customer["id"]), what="ended")
    assert (ended["payload"]["reason"], ended["payload"]["ended_on"]) == ("expired", day(10))
    [contact] = await wait_for(
        lambda: events(recorder, "customers.customer.became_contact.v1", customer["id"]), what="became_contact"
    )
    assert contact["payload"]["contract_id"] == contract["id"]
    _, listed, _ = await api.call("GET", f"/v1/customers/{customer['id']}/contracts", 200)
    assert listed["items"][0]["status"] == "ended"


async def _kind(api: Api, customer_id: str, kind: str) -> bool:
    return (await api.get(customer_id))["kind"] == kind


async def test_a_member_with_two_contracts_stays_a_member_until_the_last_one_ends(env):
    api, clock, recorder, _ = env
    customer = await api.customer()
    plan = await api.plan()
    await api.contract(customer["id"], plan["id"], day(0), day(2))
    await api.contract(customer["id"], plan["id"], day(0), day(6))
    clock.advance(days=3)
    await wait_for(lambda: len(events(recorder, "customers.contract.ended.v1", customer["id"])) == 1, what="first end")
    assert (await api.get(customer["id"]))["kind"] == "member"
    clock.advance(days=4)
    await wait_for(lambda: _kind(api, customer["id"], "contact"), what="contact after the last contract")
    # the event leaves through the outbox a moment after the change commits
    await wait_for(
        lambda: events(recorder, "customers.customer.became_contact.v1", customer["id"]), what="became_contact"
    )
    assert len(events(recorder, "customers.customer.became_member.v1", customer["id"])) == 1
    assert len(events(recorder, "customers.customer.became_contact.v1", customer["id"])) == 1


async def test_a_contract_that_ended_while_the_service_was_down_ends_once_when_it_is_back(
    system_factory, amqp, prefix, keys
):
    clock = FakeClock(START)
    recorder = await EventRecorder(amqp, prefix).start()
    first = system_factory(clock=clock)
    await first.start("customers")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        api = Api(http, first.urls["customers"])
        customer = await api.customer()
        plan = await api.plan()
        await api.contract(customer["id"], plan["id"], day(0), day(3))
        await first.stop()
        clock.advance(days=20)  # down for weeks
        second = system_factory(clock=clock)
        await second.start("customers")
        api = Api(http, second.urls["customers"])
        await wait_for(lambda: _kind(api, customer["id"], "contact"), what="caught up")
        await ticks_pass(
            lambda: second.apps["customers"][SCHEDULER].ticks, what="scheduler ticks"
        )  # nothing more may happen
    await wait_for(lambda: events(recorder, "customers.customer.became_contact.v1", customer["id"]), what="event")
    assert len(events(recorder, "customers.contract.ended.v1", customer["id"])) == 1
    assert len(events(recorder, "customers.customer.became_contact.v1", customer["id"])) == 1


async def test_two_scheduler_replicas_never_transition_a_customer_twice(system_factory, amqp, prefix, keys):
    clock = FakeClock(START)
    recorder = await EventRecorder(amqp, prefix).start()
    replicas = [system_factory(clock=clock), system_factory(clock=clock)]
    for r in replicas:
        await r.start("customers")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        api = Api(http, replicas[0].urls["customers"])
        plan = await api.plan()
        customers = [await api.customer(f"Member {i}", f"m{i}@example.com") for i in range(25)]
        for c in customers:
            await api.contract(c["id"], plan["id"], day(1), day(2))
        clock.advance(days=1)
        await wait_for(
            lambda: len(recorder.of_type("customers.customer.became_member.v1")) == 25, timeout=20, what="25 members"
        )
        clock.advance(days=2)
        await wait_for(
            lambda: len(recorder.of_type("customers.customer.became_contact.v1")) == 25, timeout=20, what="25 contacts"
        )
        for scheduler in [r.apps["customers"][SCHEDULER] for r in replicas]:  # nothing more may happen
            await ticks_pass(lambda s=scheduler: s.ticks, what="scheduler ticks")
    for key in (
        "customers.contract.started.v1",
        "customers.contract.ended.v1",
        "customers.customer.became_member.v1",
        "customers.customer.became_contact.v1",
    ):
        per_customer = [e["payload"]["customer_id"] for e in recorder.of_type(key)]
        assert len(per_customer) == len(set(per_customer)) == 25, key


async def test_cancelling_ends_the_contract_on_the_chosen_day_with_reason_cancelled(env):
    api, _clock, recorder, _ = env
    customer = await api.customer()
    plan = await api.plan()
    contract = await api.contract(customer["id"], plan["id"], day(-10))
    status, _problem, _ = await api.call(
        "POST", f"/v1/contracts/{contract['id']}/cancellation", json={"ends_on": day(-30), "reason": "moving"}
    )
    assert status == 409
    _, cancelled, _ = await api.call(
        "POST", f"/v1/contracts/{contract['id']}/cancellation", 200, json={"ends_on": day(-1), "reason": "moving out"}
    )
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation"]["reason"] == "moving out"
    assert (await api.get(customer["id"]))["kind"] == "contact"
    [ended] = await wait_for(lambda: events(recorder, "customers.contract.ended.v1", customer["id"]), what="ended")
    assert ended["payload"]["reason"] == "cancelled"
    await api.call(
        "POST", f"/v1/contracts/{contract['id']}/cancellation", 409, json={"ends_on": day(-1), "reason": "again"}
    )
    await api.call(
        "POST",
        "/v1/contracts/00000000-0000-0000-0000-000000000000/cancellation",
        404,
        json={"ends_on": day(0), "reason": "x"},
    )


async def test_a_cancellation_in_the_future_keeps_the_member_until_that_day(env):
    api, clock, _recorder, _ = env
    customer = await api.customer()
    plan = await api.plan()
    contract = await api.contract(customer["id"], plan["id"], day(0))
    _, view, _ = await api.call(
        "POST", f"/v1/contracts/{contract['id']}/cancellation", 200, json={"ends_on": day(3), "reason": "leaving"}
    )
    assert view["status"] == "active" and view["ends_on"] == day(3)
    clock.advance(days=4)
    await wait_for(lambda: _kind(api, customer["id"], "contact"), what="contact after the cancellation date")


async def test_suspension_and_reactivation_with_their_409s_and_events(env):
    api, _clock, recorder, _ = env
    customer = await api.customer()
    cid = customer["id"]
    _, suspended, _ = await api.call(
        "POST", f"/v1/customers/{cid}/suspension", 201, json={"reason": "Unpaid invoice", "category": "overdue"}
    )
    assert suspended["customer"]["standing"] == "suspended"
    await api.call("POST", f"/v1/customers/{cid}/suspension", 409, json={"reason": "again"})
    _, current, _ = await api.call("GET", f"/v1/customers/{cid}/suspension", 200)
    assert (current["category"], current["reason"]) == ("overdue", "Unpaid invoice")
    _, reactivated, _ = await api.call("DELETE", f"/v1/customers/{cid}/suspension", 200)
    assert reactivated["standing"] == "active"
    await api.call("DELETE", f"/v1/customers/{cid}/suspension", 409)
    await api.call("GET", f"/v1/customers/{cid}/suspension", 404)
    [s] = await wait_for(lambda: events(recorder, "customers.customer.suspended.v1", cid), what="suspended")
    [r] = await wait_for(lambda: events(recorder, "customers.customer.reactivated.v1", cid), what="reactivated")
    assert s["payload"]["standing"] == "suspended" and s["payload"]["category"] == "overdue"
    assert r["payload"]["by"] == "operator" and r["sequence"] > s["sequence"]
    status, problem, _ = await api.call(
        "POST", f"/v1/customers/{cid}/suspension", json={"reason": "x", "category": "vacation"}
    )
    assert status == 422 and problem["errors"][0]["field"] == "category"
    status, problem, _ = await api.call(
        "POST", f"/v1/customers/{cid}/suspension", json={"reason": "x", "until": "2020-01-01T00:00:00Z"}
    )
    assert status == 422 and problem["errors"][0]["field"] == "until"


async def test_a_suspension_with_an_end_date_ends_by_itself_and_never_ends_contracts(env):
    api, clock, recorder, _ = env
    customer = await api.customer()
    cid = customer["id"]
    plan = await api.plan()
    await api.contract(cid, plan["id"], day(0))
    until = (START + timedelta(days=2)).isoformat()
    await api.call("POST", f"/v1/customers/{cid}/suspension", 201, json={"reason": "Paused", "until": until})
    got = await api.get(cid)
    assert (got["kind"], got["standing"]) == ("member", "suspended")
    clock.advance(days=2, seconds=1)
    [r] = await wait_for(lambda: events(recorder, "customers.customer.reactivated.v1", cid), what="auto reactivation")
    assert r["payload"]["by"] == "system"
    got = await api.get(cid)
    assert (got["kind"], got["standing"]) == ("member", "active")
    assert events(recorder, "customers.contract.ended.v1", cid) == []


async def test_editing_needs_the_current_version_and_announces_old_and_new_values(env):
    api, _, recorder, _ = env
    customer = await api.customer("Grace Hopper", "grace@example.com")
    await api.customer("Other Person", "other@example.com")
    cid = customer["id"]
    status, _, _ = await api.call("PATCH", f"/v1/customers/{cid}", json={"company_name": "Navy"})
    assert status == 428
    status, _, _ = await api.call(
        "PATCH", f"/v1/customers/{cid}", json={"company_name": "Navy"}, headers={"If-Match": '"99"'}
    )
    assert status == 412
    status, updated, headers = await api.call(
        "PATCH",
        f"/v1/customers/{cid}",
        200,
        json={"company_name": "Navy", "email": "Grace.Hopper@example.com"},
        headers={"If-Match": '"1"'},
    )
    assert (updated["company_name"], updated["email"], headers["ETag"]) == ("Navy", "Grace.Hopper@example.com", '"2"')
    status, _, _ = await api.call(
        "PATCH", f"/v1/customers/{cid}", json={"email": "OTHER@example.com"}, headers={"If-Match": '"2"'}
    )
    assert status == 409
    status, problem, _ = await api.call(
        "PATCH", f"/v1/customers/{cid}", json={"full_name": None}, headers={"If-Match": '"2"'}
    )
    assert status == 422 and problem["errors"][0]["field"] == "full_name"
    status, _, _ = await api.call("PATCH", f"/v1/customers/{cid}", json={"kind": "member"}, headers={"If-Match": '"2"'})
    assert status == 422  # kind is derived, never set
    [event] = await wait_for(lambda: events(recorder, "customers.customer.updated.v1", cid), what="updated")
    assert event["payload"]["changes"] == {
        "company_name": {"old": None, "new": "Navy"},
        "email": {"old": "grace@example.com", "new": "Grace.Hopper@example.com"},
    }
    assert event["payload"]["email"] == "Grace.Hopper@example.com"


async def test_history_lists_every_change_with_who_and_the_correlation_id(env):
    api, clock, _, _ = env
    customer = await api.customer()
    cid = customer["id"]
    plan = await api.plan()
    await api.contract(cid, plan["id"], day(0), day(1))
    await api.call(
        "POST", f"/v1/customers/{cid}/suspension", 201, json={"reason": "x"}, headers={"X-Request-ID": "suspend-req"}
    )
    clock.advance(days=2)
    await wait_for(lambda: _kind(api, cid, "contact"), what="contact")
    _, history, _ = await api.call("GET", f"/v1/customers/{cid}/history", 200)
    actions = [(h["action"], h["actor"]["type"]) for h in history["items"]]
    assert actions == [
        ("created", "operator"),
        ("contract.created", "operator"),
        ("contract.started", "operator"),
        ("became_member", "operator"),
        ("suspended", "operator"),
        ("contract.ended", "system"),
        ("became_contact", "system"),
    ]
    suspended = next(h for h in history["items"] if h["action"] == "suspended")
    assert suspended["correlation_id"] == "suspend-req"
    _, page, _ = await api.call("GET", f"/v1/customers/{cid}/history", 200, params={"limit": "3"})
    _, rest, _ = await api.call("GET", f"/v1/customers/{cid}/history", 200, params={"cursor": page["next_cursor"]})
    assert [h["action"] for h in page["items"] + rest["items"]] == [a for a, _ in actions]


async def test_the_create_user_account_action_is_announced_once_and_then_409(env):
    api, _, recorder, _ = env
    customer = await api.customer()
    cid = customer["id"]
    _, body, _ = await api.call("POST", f"/v1/customers/{cid}/user-account", 202)
    assert body["portal_access"] == "requested"
    status, problem, _ = await api.call("POST", f"/v1/customers/{cid}/user-account")
    assert status == 409 and problem["portal_access"] == "requested"
    await api.call("POST", "/v1/customers/00000000-0000-0000-0000-000000000000/user-account", 404)
    [requested] = await wait_for(
        lambda: events(recorder, "customers.customer.user_account_requested.v1", cid), what="requested"
    )
    assert requested["payload"]["email"] == customer["email"]


async def test_search_by_text_filters_sort_and_stable_pages(env):
    api, _, _, _ = env
    names = ["Zoe Zimmer", "Adam Apple", "Mia Moss", "Bob Builder", "Eve Evans"]
    made = {}
    for n in names:
        made[n] = await api.customer(n, f"{n.split()[0].lower()}@example.com")
    await api.call(
        "PATCH",
        f"/v1/customers/{made['Mia Moss']['id']}",
        200,
        json={"company_name": "Acme Builders"},
        headers={"If-Match": '"1"'},
    )
    _, found, _ = await api.call("GET", "/v1/customers", 200, params={"q": "build"})
    assert sorted(c["full_name"] for c in found["items"]) == ["Bob Builder", "Mia Moss"]
    _, found, _ = await api.call("GET", "/v1/customers", 200, params={"q": "100%_"})
    assert found["items"] == []
    seen: list[str] = []
    cursor = None
    while True:
        params = {"sort": "full_name", "limit": "2"} | ({"cursor": cursor} if cursor else {})
        _, page, _ = await api.call("GET", "/v1/customers", 200, params=params)
        seen += [c["full_name"] for c in page["items"]]
        if cursor is None:  # rows inserted while paging: never repeated, never making us skip
            await api.customer("Aaron Early", "aaron@example.com")
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen[:1] == ["Adam Apple"] and seen == sorted(seen, key=str.lower)
    assert set(names) <= set(seen) and len(seen) == len(set(seen))
    _, desc, _ = await api.call("GET", "/v1/customers", 200, params={"sort": "-created_at", "limit": "1"})
    assert desc["items"][0]["full_name"] == "Aaron Early"
    status, _, _ = await api.call(
        "GET", "/v1/customers", params={"sort": "-full_name", "cursor": cursor or page["next_cursor"] or "x"}
    )
    assert status == 400
    _, none, _ = await api.call("GET", "/v1/customers", 200, params={"has_user_account": "true"})
    assert none["items"] == []
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, empty, _ = await api.call("GET", "/v1/customers", 200, params={"created_after": later})
    assert empty["items"] == []


async def test_customers_read_and_edit_only_themselves_and_nothing_while_suspended(env, keys):
    api, _, _, _ = env
    me = await api.customer("Self Service", "self@example.com")
    other = await api.customer("Some One", "someone@example.com")
    import uuid as _uuid

    mine = {"Authorization": f"Bearer {keys.token('contact', _uuid.UUID(me['id']))}"}
    status, _, _ = await api.call("GET", f"/v1/customers/{me['id']}", headers=mine)
    assert status == 200
    status, _, _ = await api.call("GET", f"/v1/customers/{other['id']}", headers=mine)
    assert status == 404
    status, _, _ = await api.call("GET", "/v1/customers", headers=mine)
    assert status == 403
    status, edited, _ = await api.call(
        "PATCH", f"/v1/customers/{me['id']}", json={"phone": "+44 20 7946 0000"}, headers={**mine, "If-Match": '"1"'}
    )
    assert status == 200 and edited["phone"] == "+44 20 7946 0000"
    status, _, _ = await api.call(
        "PATCH", f"/v1/customers/{other['id']}", json={"phone": "+1 555"}, headers={**mine, "If-Match": '"1"'}
    )
    assert status == 404
    _, history, _ = await api.call("GET", f"/v1/customers/{me['id']}/history", 200)
    assert history["items"][-1]["actor"]["type"] == "customer"

    await api.call("POST", f"/v1/customers/{me['id']}/suspension", 201, json={"reason": "policy"})
    # the token still says "active": the service's own data decides
    status, problem, _ = await api.call(
        "PATCH", f"/v1/customers/{me['id']}", json={"phone": "+1 555 0100"}, headers={**mine, "If-Match": '"3"'}
    )
    assert status == 403 and problem["type"] == "urn:problem:customer-suspended"
    status, read, _ = await api.call("GET", f"/v1/customers/{me['id']}", headers=mine)
    assert status == 200 and read["standing"] == "suspended"
    await api.call("DELETE", f"/v1/customers/{me['id']}/suspension", 200)
    status, _, _ = await api.call(
        "PATCH", f"/v1/customers/{me['id']}", json={"phone": "+1 555 0100"}, headers={**mine, "If-Match": '"4"'}
    )
    assert status == 200
