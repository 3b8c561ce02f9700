"""Visitors and visits as operators, hosts and the kiosk use them: who may register whom, the visit's status
machine, the two emails through notifications, no-shows and anonymisation as time passes, listing."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from services.visitors.app import SCHEDULER
from services.visitors.domain import CODE_ALPHABET
from shared.clock import FakeClock
from shared.events import CustomerReactivatedV1, CustomerSuspendedV1
from tests.integration.test_accounts_lifecycle import customer_event
from tests.integration.test_messaging import body as envelope_body
from tests.integration.test_messaging import customer_created
from tests.support.bus import EventRecorder, publish_raw
from tests.support.wait import ticks_pass, wait_for

START = datetime(2027, 3, 9, 8, 0, tzinfo=UTC)
CODE = re.compile(f"[{CODE_ALPHABET}]{{6}}")


def at(**delta: float) -> str:
    return (START + timedelta(**delta)).isoformat()


class Visits:
    """The visitors API, the hosts it knows (from customer events published on the bus) and the events it sends."""

    def __init__(self, http, system, amqp, prefix, keys, recorder, clock) -> None:
        self.http, self.system, self.amqp, self.prefix = http, system, amqp, prefix
        self.keys, self.recorder, self.clock = keys, recorder, clock
        self.operator = keys.token()
        self.db = system.runtime("visitors").db
        self.scheduler = system.apps["visitors"][SCHEDULER]

    async def call(self, method: str, path: str, token: str | None = None, expect: int | None = None, **kw):
        headers = {"Authorization": f"Bearer {token or self.operator}", **kw.pop("headers", {})}
        async with self.http.request(method, self.system.urls["visitors"] + path, headers=headers, **kw) as resp:
            body = await resp.json() if resp.content_type.endswith("json") else await resp.text()
            if expect is not None:
                assert resp.status == expect, (resp.status, body)
            return resp.status, body, resp.headers

    async def publish(self, envelope) -> None:
        """Deliver a customer event and wait until visitors has handled it."""
        await publish_raw(
            self.amqp, f"{self.prefix}events", envelope.routing_key, envelope_body(envelope), str(envelope.event_id)
        )
        await wait_for(
            lambda: self.db.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = 'visitors.customer-events' AND event_id = $1",
                envelope.event_id,
            ),
            what=f"visitors to handle {envelope.routing_key}",
        )

    async def host(self, name: str = "Ada Lovelace") -> uuid.UUID:
        """A customer who can host visitors, known to visitors from customers.customer.created.v1."""
        email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
        created = customer_created(email, send_welcome=False, name=name)
        await self.publish(created)
        return uuid.UUID(created.payload["customer_id"])

    def member(self, customer_id: uuid.UUID) -> str:
        return self.keys.token("member", customer_id)

    def contact(self, customer_id: uuid.UUID) -> str:
        return self.keys.token("contact", customer_id)

    async def register(self, token: str | None = None, expect: int = 201, **fields: Any) -> dict[str, Any]:
        _, visit, _ = await self.call("POST", "/v1/visits", token, expect, json=visit_body(**fields))
        return visit

    async def get(self, visit_id: str, token: str | None = None) -> dict[str, Any]:
        return (await self.call("GET", f"/v1/visits/{visit_id}", token, 200))[1]

    def events(self, routing_key: str, visit_id: str | None = None) -> list[dict[str, Any]]:
        found = self.recorder.of_type(routing_key)
        return [e for e in found if visit_id is None or e["subject"] == visit_id]


def visit_body(
    name: str = "Grace Hopper",
    email: str | None = None,
    host: uuid.UUID | None = None,
    purpose: str = "meeting",
    expected_at: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "visitor": {"full_name": name, "email": email or f"grace-{uuid.uuid4().hex[:6]}@example.org"},
        "purpose": purpose,
        "expected_at": expected_at or at(hours=2),
        **extra,
    }
    if host is not None:
        body["host_customer_id"] = str(host)
    return body


@pytest.fixture
async def visits(system_factory, amqp, prefix, keys, monkeypatch):
    monkeypatch.setenv("VISITORS_SCHEDULER_INTERVAL_S", "0.1")
    monkeypatch.setenv("VISITORS_TIMEZONE", "Europe/Paris")
    clock = FakeClock(START)
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(clock=clock)
    await system.start("visitors")
    async with aiohttp.ClientSession() as http:
        yield Visits(http, system, amqp, prefix, keys, recorder, clock)


async def test_an_operator_registers_a_visit_with_a_short_unambiguous_check_in_code(visits):
    host = await visits.host("Ada Lovelace")
    body = visit_body(
        host=host,
        expected_at=at(hours=2),
        expected_departure_at=at(hours=3),
        notes="Bringing a prototype.\nNeeds a projector.",
    )
    body["visitor"] = {"full_name": "Grace Hopper", "email": "grace@example.org", "company_name": "Navy"}
    status, visit, headers = await visits.call("POST", "/v1/visits", json=body)
    assert status == 201, visit
    assert headers["Location"] == f"/v1/visits/{visit['id']}"
    assert (visit["status"], visit["purpose"], visit["host_customer_id"], visit["host_name"]) == (
        "expected",
        "meeting",
        str(host),
        "Ada Lovelace",
    )
    assert visit["visitor"]["full_name"] == "Grace Hopper" and visit["visitor"]["company_name"] == "Navy"
    assert CODE.fullmatch(visit["check_in_code"]), visit["check_in_code"]
    assert await visits.get(visit["id"]) == visit

    [registered] = await wait_for(lambda: visits.events("visitors.visit.registered.v1", visit["id"]), what="event")
    assert (registered["subject"], registered["sequence"], registered["producer"]) == (visit["id"], 1, "visitors")
    payload = registered["payload"]
    assert (payload["host_customer_id"], payload["visitor_id"], payload["status"]) == (
        str(host),
        visit["visitor"]["id"],
        "expected",
    )
    # nothing personal about the visitor is broadcast
    assert "grace" not in str(payload).lower() and "navy" not in str(payload).lower()
    assert "projector" not in str(payload)


async def test_a_visit_goes_expected_checked_in_checked_out_and_every_step_is_an_event(visits):
    host = await visits.host()
    visit = await visits.register(host=host)
    vid = visit["id"]
    status, problem, _ = await visits.call("POST", f"/v1/visits/{vid}/check-out")
    assert (status, problem["type"], problem["visit_status"]) == (409, "urn:problem:visit-status", "expected")
    assert "not checked in" in problem["detail"]

    visits.clock.advance(minutes=5)
    _, checked_in, _ = await visits.call("POST", f"/v1/visits/{vid}/check-in", expect=200)
    assert (checked_in["status"], checked_in["checked_in_at"]) == ("checked_in", at(minutes=5))
    await visits.call("POST", f"/v1/visits/{vid}/check-in", expect=409)
    status, problem, _ = await visits.call("POST", f"/v1/visits/{vid}/cancellation", json={})
    assert (status, problem["visit_status"]) == (409, "checked_in")

    visits.clock.advance(hours=1)
    _, checked_out, _ = await visits.call("POST", f"/v1/visits/{vid}/check-out", expect=200)
    assert (checked_out["status"], checked_out["checked_out_at"]) == ("checked_out", at(hours=1, minutes=5))
    for action in ("check-in", "check-out", "cancellation"):
        await visits.call("POST", f"/v1/visits/{vid}/{action}", expect=409)

    keys = ["registered", "checked_in", "checked_out"]
    found = await wait_for(
        lambda: all(visits.events(f"visitors.visit.{k}.v1", vid) for k in keys), what="the three events"
    )
    assert found
    sequences = [visits.events(f"visitors.visit.{k}.v1", vid)[0]["sequence"] for k in keys]
    assert sequences == [1, 2, 3]
    out = visits.events("visitors.visit.checked_out.v1", vid)[0]["payload"]
    assert (out["status"], out["host_customer_id"], out["by"]) == ("checked_out", str(host), "operator")


async def test_a_cancelled_visit_cannot_be_checked_in_or_cancelled_again(visits):
    visit = await visits.register()  # an operator-led tour: no host
    vid = visit["id"]
    _, cancelled, _ = await visits.call(
        "POST", f"/v1/visits/{vid}/cancellation", json={"reason": "Rescheduled"}, expect=200
    )
    assert (cancelled["status"], cancelled["cancellation_reason"]) == ("cancelled", "Rescheduled")
    status, problem, _ = await visits.call("POST", f"/v1/visits/{vid}/check-in")
    assert (status, problem["visit_status"]) == (409, "cancelled")
    await visits.call("POST", f"/v1/visits/{vid}/cancellation", expect=409)
    await visits.call("POST", f"/v1/visits/{vid}/check-out", expect=409)
    # the kiosk does not know the code of a visit that is over
    status, _, _ = await visits.call("POST", "/v1/check-ins", json={"code": visit["check_in_code"]})
    assert status == 404
    [event] = await wait_for(lambda: visits.events("visitors.visit.cancelled.v1", vid), what="cancelled")
    assert (event["payload"]["host_customer_id"], event["payload"]["by"]) == (None, "operator")


async def test_operators_register_for_any_host_or_none_and_members_and_contacts_only_for_themselves(visits):
    ada, bob = await visits.host("Ada Lovelace"), await visits.host("Bob Kahn")
    # operators: any host, or none (an operator-led tour)
    assert (await visits.register(host=bob))["host_customer_id"] == str(bob)
    tour = await visits.register(purpose="tour")
    assert (tour["host_customer_id"], tour["host_name"]) == (None, None)
    # a member omitting the host is the host; a contact may name themselves
    mine = await visits.register(visits.member(ada))
    assert (mine["host_customer_id"], mine["registered_by"]) == (str(ada), "host")
    assert (await visits.register(visits.contact(bob), host=bob))["host_customer_id"] == str(bob)
    # another customer's id, known or not: 403 naming the field, nothing registered
    for other in (bob, uuid.uuid4()):
        status, problem, _ = await visits.call("POST", "/v1/visits", visits.member(ada), json=visit_body(host=other))
        assert (status, problem["errors"][0]["field"]) == (403, "host_customer_id"), problem
    # an operator naming an unknown host, or a visitor's id, gets 422 naming the field
    for unknown in (uuid.uuid4(), uuid.UUID(mine["visitor"]["id"])):
        status, problem, _ = await visits.call("POST", "/v1/visits", json=visit_body(host=unknown))
        assert (status, problem["type"], problem["errors"][0]["field"]) == (
            422,
            "urn:problem:unknown-host",
            "host_customer_id",
        )
    # a member whose customer record has not reached visitors yet is not a known host either
    status, problem, _ = await visits.call("POST", "/v1/visits", visits.member(uuid.uuid4()), json=visit_body())
    assert (status, problem["errors"][0]["field"]) == (422, "host_customer_id")
    assert await visits.db.fetchval("SELECT count(*) FROM visits") == 4


async def test_a_suspended_host_cannot_register_visitors_even_with_a_token_that_says_active(visits):
    ada = await visits.host()
    token = visits.member(ada)  # issued before the suspension: still says active
    visit = await visits.register(token)
    await visits.publish(customer_event(CustomerSuspendedV1, str(ada), 2))

    status, problem, _ = await visits.call("POST", "/v1/visits", token, json=visit_body())
    assert (status, problem["type"]) == (403, "urn:problem:customer-suspended")
    assert "suspended" in problem["detail"]
    for action in ("check-in", "cancellation"):
        status, problem, _ = await visits.call("POST", f"/v1/visits/{visit['id']}/{action}", token)
        assert (status, problem["type"]) == (403, "urn:problem:customer-suspended")
    # reading stays allowed, and an operator still acts for them
    assert (await visits.get(visit["id"], token))["status"] == "expected"
    await visits.call("POST", f"/v1/visits/{visit['id']}/check-in", expect=200)

    await visits.publish(customer_event(CustomerReactivatedV1, str(ada), 3))
    await visits.register(token)


async def test_members_see_and_act_only_on_the_visits_they_host(visits):
    ada, bob = await visits.host("Ada Lovelace"), await visits.host("Bob Kahn")
    adas = await visits.register(visits.member(ada))
    bobs = await visits.register(host=bob)
    tour = await visits.register()
    for other in (bobs, tour):
        for method, path in (
            ("GET", ""),
            ("POST", "/check-in"),
            ("POST", "/check-out"),
            ("POST", "/cancellation"),
        ):
            status, _, _ = await visits.call(method, f"/v1/visits/{other['id']}{path}", visits.member(ada))
            assert status == 404, (method, path)
    _, listed, _ = await visits.call("GET", "/v1/visits", visits.member(ada), expect=200)
    assert [v["id"] for v in listed["items"]] == [adas["id"]]
    _, listed, _ = await visits.call(
        "GET", "/v1/visits", visits.member(ada), params={"host_customer_id": str(bob)}, expect=200
    )
    assert listed["items"] == []
    # the host acts on their own visit
    _, cancelled, _ = await visits.call("POST", f"/v1/visits/{adas['id']}/cancellation", visits.member(ada))
    assert cancelled["status"] == "cancelled"
    [event] = await wait_for(lambda: visits.events("visitors.visit.cancelled.v1", adas["id"]), what="cancelled")
    assert event["payload"]["by"] == "host"


async def test_a_returning_visitor_is_recognised_by_email_whatever_its_case(visits):
    first = await visits.register(name="Grace Hopper", email="Grace.Hopper@Example.org")
    again = await visits.register(name="Grace B. Hopper", email="grace.hopper@example.org", expected_at=at(days=3))
    assert again["visitor"]["id"] == first["visitor"]["id"]
    assert again["check_in_code"] != first["check_in_code"]
    # the latest registration's details are the visitor's
    assert (await visits.get(first["id"]))["visitor"]["full_name"] == "Grace B. Hopper"
    other = await visits.register(email="someone.else@example.org")
    assert other["visitor"]["id"] != first["visitor"]["id"]


async def test_the_kiosk_checks_a_visitor_in_by_code_with_an_operator_token(visits):
    host = await visits.host()
    visit = await visits.register(host=host)
    code = visit["check_in_code"]
    typed = f" {code[:3].lower()}-{code[3:].lower()} "  # as a person types it
    for token, expected in ((visits.member(host), 403), (visits.keys.token("contact", host), 403)):
        status, _, _ = await visits.call("POST", "/v1/check-ins", token, json={"code": code})
        assert status == expected
    async with visits.http.post(f"{visits.system.urls['visitors']}/v1/check-ins", json={"code": code}) as resp:
        assert resp.status == 401

    _, checked_in, _ = await visits.call("POST", "/v1/check-ins", json={"code": typed}, expect=200)
    assert (checked_in["id"], checked_in["status"]) == (visit["id"], "checked_in")
    status, problem, _ = await visits.call("POST", "/v1/check-ins", json={"code": code})
    assert (status, problem["visit_status"]) == (409, "checked_in")
    status, problem, _ = await visits.call("POST", "/v1/check-ins", json={"code": "ZZZZZZ"})
    assert (status, problem["type"]) == (404, "urn:problem:unknown-code")
    for bad in ("O0I1O0", "ABC", "ABCDEFGHJ"):
        status, problem, _ = await visits.call("POST", "/v1/check-ins", json={"code": bad})
        assert (status, problem["errors"][0]["field"]) == (422, "code")
    status, problem, _ = await visits.call("POST", "/v1/check-ins", json={"code": code, "visit_id": visit["id"]})
    assert (status, problem["errors"][0]["field"]) == (422, "visit_id")
    [event] = await wait_for(lambda: visits.events("visitors.visit.checked_in.v1", visit["id"]), what="checked in")
    assert event["payload"]["by"] == "kiosk"


async def test_a_check_in_code_is_unique_among_open_visits_and_drawn_again_on_a_collision(visits, monkeypatch):
    from services.visitors import domain

    draws = iter(["K7M2QX", "K7M2QX", "H4PZ9W", "K7M2QX"])
    monkeypatch.setattr(domain, "new_code", lambda: next(draws))
    first = await visits.register()
    second = await visits.register()  # K7M2QX is taken by an open visit: drawn again
    assert (first["check_in_code"], second["check_in_code"]) == ("K7M2QX", "H4PZ9W")
    await visits.call("POST", f"/v1/visits/{first['id']}/cancellation", expect=200)
    third = await visits.register()  # the first visit is over: its code is free again
    assert third["check_in_code"] == "K7M2QX"
    _, checked_in, _ = await visits.call("POST", "/v1/check-ins", json={"code": "k7m2qx"}, expect=200)
    assert checked_in["id"] == third["id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"visitor": {"full_name": "A"}}, "visitor.email"),
        ({"visitor": {"full_name": "A\nBcc: x@example.com", "email": "a@example.org"}}, "visitor.full_name"),
        ({"visitor": {"full_name": "A", "email": "a@example.org", "phone": "call me"}}, "visitor.phone"),
        ({"visitor": {"full_name": "A", "email": "a@example.org", "customer_id": "x"}}, "visitor.customer_id"),
        ({"purpose": "party"}, "purpose"),
        ({"expected_at": "2027-03-09T12:00:00"}, "expected_at"),
        ({"expected_departure_at": at(hours=1)}, "expected_departure_at"),
        ({"expected_at": at(hours=-3)}, "expected_at"),
        ({"notes": "a\u0000b"}, "notes"),
        ({"status": "checked_in"}, "status"),
    ],
)
async def test_an_invalid_registration_is_a_422_naming_the_field(visits, change, field):
    status, problem, _ = await visits.call("POST", "/v1/visits", json=visit_body() | change)
    assert status == 422, problem
    assert field in {e["field"] for e in problem["errors"]}, problem
    assert await visits.db.fetchval("SELECT count(*) FROM visits") == 0


async def test_a_retry_with_the_same_idempotency_key_gets_the_first_visit(visits):
    body = visit_body()
    key = {"Idempotency-Key": str(uuid.uuid4())}
    results = await asyncio.gather(*(visits.call("POST", "/v1/visits", json=body, headers=key) for _ in range(4)))
    assert {status for status, _, _ in results} == {201}
    assert len({visit["id"] for _, visit, _ in results}) == 1
    assert sum(headers.get("Idempotent-Replayed") == "true" for _, _, headers in results) == 3
    assert await visits.db.fetchval("SELECT count(*) FROM visits") == 1
    status, problem, _ = await visits.call("POST", "/v1/visits", json=visit_body(), headers=key)
    assert (status, problem["type"]) == (422, "urn:problem:idempotency-key-reused")


async def test_listing_filters_by_day_in_the_space_time_zone_host_status_and_time(visits):
    ada, bob = await visits.host("Ada Lovelace"), await visits.host("Bob Kahn")
    # the space is in Europe/Paris (UTC+1 in March): 23:15 UTC on the 9th is already the 10th there
    early = await visits.register(host=ada, expected_at="2027-03-09T23:15:00Z")
    late = await visits.register(host=bob, expected_at="2027-03-10T22:30:00Z")
    next_day = await visits.register(host=ada, expected_at="2027-03-10T23:30:00Z")
    today = await visits.register(host=ada, expected_at="2027-03-09T10:00:00Z")
    await visits.call("POST", f"/v1/visits/{late['id']}/cancellation", expect=200)

    async def ids(**params: str) -> list[str]:
        _, page, _ = await visits.call("GET", "/v1/visits", params=params, expect=200)
        return [v["id"] for v in page["items"]]

    assert await ids(date="2027-03-10") == [early["id"], late["id"]]
    assert await ids(date="2027-03-11") == [next_day["id"]]
    assert await ids(date="2027-03-09") == [today["id"]]
    assert await ids(date="2027-03-10", host_customer_id=str(ada)) == [early["id"]]
    assert await ids(status="cancelled") == [late["id"]]
    assert await ids(**{"from": "2027-03-10T00:00:00Z", "to": "2027-03-11T00:00:00Z"}) == [late["id"], next_day["id"]]
    assert await ids() == [today["id"], early["id"], late["id"], next_day["id"]]
    for bad in ({"date": "10/03/2027"}, {"status": "gone"}, {"from": "yesterday"}, {"sort": "name"}):
        status, problem, _ = await visits.call("GET", "/v1/visits", params=bad)
        assert (status, problem["errors"][0]["field"]) == (422, next(iter(bad))), problem
    status, problem, _ = await visits.call("GET", "/v1/visits", params={"cursor": "not-a-cursor"})
    assert (status, problem["errors"][0]["field"]) == (400, "cursor")


async def test_listing_pages_neither_skip_nor_repeat_visits_registered_meanwhile(visits):
    registered = [await visits.register(expected_at=at(hours=h)) for h in range(1, 8)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        _, page, _ = await visits.call("GET", "/v1/visits", params=params, expect=200)
        seen += [v["id"] for v in page["items"]]
        if len(seen) == 3:  # registered between two pages: before and after the cursor
            await visits.register(expected_at=at(minutes=30))
            registered.append(await visits.register(expected_at=at(hours=10)))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [v["id"] for v in registered]


async def test_a_visit_still_expected_after_the_no_show_window_becomes_a_no_show(visits):
    host = await visits.host()
    visit = await visits.register(host=host, expected_at=at(hours=1))
    arrived = await visits.register(host=host, expected_at=at(hours=1))
    await visits.call("POST", f"/v1/visits/{arrived['id']}/check-in", expect=200)

    visits.clock.advance(hours=1, minutes=119)  # within the 120 minutes after the expected arrival
    await ticks_pass(lambda: visits.scheduler.ticks, what="scheduler ticks")  # nothing may happen yet
    assert (await visits.get(visit["id"]))["status"] == "expected"

    visits.clock.advance(minutes=2)
    no_show = await wait_for(lambda: _status_is(visits, visit["id"], "no_show"), what="the visit to become a no-show")
    assert no_show["no_show_at"] is not None
    assert (await visits.get(arrived["id"]))["status"] == "checked_in"
    [event] = await wait_for(lambda: visits.events("visitors.visit.no_show.v1", visit["id"]), what="no_show event")
    assert (event["sequence"], event["payload"]["host_customer_id"]) == (2, str(host))
    await visits.call("POST", "/v1/check-ins", json={"code": visit["check_in_code"]}, expect=404)
    await visits.call("POST", f"/v1/visits/{visit['id']}/check-in", expect=409)
    await ticks_pass(lambda: visits.scheduler.ticks, what="scheduler ticks")
    assert len(visits.events("visitors.visit.no_show.v1", visit["id"])) == 1


async def _status_is(visits: Visits, visit_id: str, status: str) -> dict[str, Any] | None:
    visit = await visits.get(visit_id)
    return visit if visit["status"] == status else None


async def test_a_visitor_is_anonymised_after_the_retention_period_and_their_visits_are_kept(visits):
    host = await visits.host()
    old = await visits.register(name="Grace Hopper", email="grace@example.org", host=host, notes="Allergic to cats")
    await visits.call("POST", f"/v1/visits/{old['id']}/check-in", expect=200)
    visits.clock.advance(hours=1)
    await visits.call("POST", f"/v1/visits/{old['id']}/check-out", expect=200)
    upcoming = await visits.register(name="Alan Turing", email="alan@example.org", expected_at=at(days=400))

    visits.clock.advance(days=364)
    await ticks_pass(lambda: visits.scheduler.ticks, what="scheduler ticks")  # not yet
    assert (await visits.get(old["id"]))["visitor"]["email"] == "grace@example.org"

    visits.clock.advance(days=2)
    gone = await wait_for(lambda: _anonymised(visits, old["id"]), what="the visitor's personal data to be anonymised")
    assert gone["visitor"] | {"anonymised_at": None} == {
        "id": old["visitor"]["id"],
        "full_name": None,
        "email": None,
        "company_name": None,
        "phone": None,
        "anonymised_at": None,
    }
    assert (gone["status"], gone["checked_in_at"], gone["checked_out_at"]) == (
        "checked_out",
        START.isoformat(),
        at(hours=1),
    )
    assert gone["notes"] is None and gone["host_customer_id"] == str(host)
    # a visitor with a visit still to come keeps their data
    assert (await visits.get(upcoming["id"]))["visitor"]["email"] == "alan@example.org"
    # the same person registered again is a new visitor
    again = await visits.register(email="grace@example.org", expected_at=at(days=367))
    assert again["visitor"]["id"] != old["visitor"]["id"]


async def _anonymised(visits: Visits, visit_id: str) -> dict[str, Any] | None:
    visit = await visits.get(visit_id)
    return visit if visit["visitor"]["anonymised_at"] else None


async def test_nothing_in_the_visitor_path_creates_an_account_or_a_customer(visits):
    host = await visits.host()
    visit = await visits.register(host=host)
    await visits.call("POST", "/v1/check-ins", json={"code": visit["check_in_code"]}, expect=200)
    await visits.call("POST", f"/v1/visits/{visit['id']}/check-out", expect=200)
    await wait_for(lambda: visits.events("visitors.visit.checked_out.v1", visit["id"]), what="checked out")
    rows = await visits.db.fetch("SELECT routing_key, body FROM outbox ORDER BY id")
    keys = [r["routing_key"] for r in rows]
    assert keys == [
        "visitors.visit.registered.v1",
        "notifications.send_email.v1",
        "visitors.visit.checked_in.v1",
        "notifications.send_email.v1",
        "visitors.visit.checked_out.v1",
    ]
    assert {e["producer"] for e in visits.recorder.events} == {"customers", "visitors"}
    assert len(visits.recorder.of_type("customers.customer.created.v1")) == 1  # the one this test published


@pytest.fixture
async def with_email(system_factory, amqp, prefix, keys, smtp, monkeypatch):
    monkeypatch.setenv("VISITORS_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("VISITORS_SPACE_ADDRESS", "12 Rue de la Paix, 75002 Paris")
    clock = FakeClock(START)
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(clock=clock, smtp_port=smtp.port)
    await system.start("visitors", "notifications")
    async with aiohttp.ClientSession() as http:
        yield Visits(http, system, amqp, prefix, keys, recorder, clock), smtp


async def test_the_visitor_gets_the_registration_email_and_the_host_an_email_on_arrival(with_email):
    visits, smtp = with_email
    host = await visits.host("Ada Lovelace")
    visit = await visits.register(
        visits.member(host),
        name="Grace <b>Hopper</b>",
        email="grace@example.org",
        expected_at="2027-03-09T13:30:00Z",
    )
    [mail] = await wait_for(lambda: smtp.to("grace@example.org"), timeout=15, what="the registration email")
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Grace <b>Hopper</b>" in text and "Ada Lovelace" in text
    assert visit["check_in_code"] in text and visit["check_in_code"] in html
    assert "14:30 (Europe/Paris)" in mail["Subject"] and "14:30" in text
    assert "12 Rue de la Paix, 75002 Paris" in text
    assert "Grace &lt;b&gt;Hopper&lt;/b&gt;" in html and "<b>Hopper</b>" not in html

    host_email = await visits.db.fetchval("SELECT email FROM hosts WHERE customer_id = $1", host)
    assert smtp.to(host_email) == []
    visits.clock.advance(hours=5, minutes=25)
    await visits.call("POST", "/v1/check-ins", json={"code": visit["check_in_code"]}, expect=200)
    [arrived] = await wait_for(lambda: smtp.to(host_email), timeout=15, what="the host's email")
    assert "Grace <b>Hopper</b> has arrived" in arrived["Subject"]
    assert "14:25 (Europe/Paris)" in arrived.get_body(("plain",)).get_content()

    notifications = visits.system.runtime("notifications").db
    deliveries = await wait_for(lambda: _all_sent(notifications, 2), what="both deliveries recorded as sent")
    assert [(d["template"], d["to_email"], d["customer_id"]) for d in deliveries] == [
        ("visit_registered", "grace@example.org", None),
        ("host_visitor_arrived", host_email, host),
    ]


async def _all_sent(db, n: int):
    rows = await db.fetch("SELECT template, to_email, customer_id, status FROM deliveries ORDER BY created_at")
    return rows if len(rows) == n and all(r["status"] == "sent" for r in rows) else None


async def test_a_host_who_checks_their_visitor_in_gets_no_arrival_email(with_email):
    visits, smtp = with_email
    host = await visits.host("Ada Lovelace")
    visit = await visits.register(visits.member(host), email="alan@example.org")
    await wait_for(lambda: smtp.to("alan@example.org"), timeout=15, what="the registration email")
    await visits.call("POST", f"/v1/visits/{visit['id']}/check-in", visits.member(host), expect=200)
    await wait_for(lambda: visits.events("visitors.visit.checked_in.v1", visit["id"]), what="the checked-in event")
    outbox = await visits.db.fetch("SELECT routing_key FROM outbox WHERE routing_key = 'notifications.send_email.v1'")
    assert len(outbox) == 1  # the registration email only


async def test_when_a_host_is_erased_their_details_go_and_nobody_can_register_for_them(visits):
    from shared.events import CustomerErasedV1, CustomerUpdatedV1, make_envelope

    host = await visits.host("Erin Erased")
    visit = await visits.register(host=host)
    assert visit["host_name"] == "Erin Erased"
    erased = make_envelope(
        CustomerErasedV1(customer_id=host, erased_at=START),
        subject=host,
        sequence=5,
        producer="customers",
    )
    await visits.publish(erased)
    row = await visits.db.fetchrow("SELECT full_name, email, erased_at FROM hosts WHERE customer_id = $1", host)
    assert (row["full_name"], row["email"]) == (None, None) and row["erased_at"] is not None
    kept = await visits.get(visit["id"])
    assert kept["host_name"] is None and kept["host_customer_id"] == str(host)  # the visit stays, without them
    status, problem, _ = await visits.call("POST", "/v1/visits", json=visit_body(host=host))
    assert status == 422 and problem["errors"][0]["field"] == "host_customer_id"
    # a late event about the customer cannot bring the details back
    late = make_envelope(
        CustomerUpdatedV1(
            customer_id=host, kind="contact", standing="active", changes={}, full_name="Erin Back", email="e@x.org"
        ),
        subject=host,
        sequence=4,
        producer="customers",
    )
    await visits.publish(late)
    assert await visits.db.fetchval("SELECT full_name FROM hosts WHERE customer_id = $1", host) is None
