"""Teams, their dated rosters and administrators, credit ledgers shared through teams, and effective space access
with the events door systems rely on, against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from shared.clock import FakeClock
from tests.support.api import CustomersApi
from tests.support.bus import EventRecorder
from tests.support.wait import wait_for

START = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
TODAY = START.date()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


class Api(CustomersApi):
    def __init__(self, session: aiohttp.ClientSession, base: str, keys) -> None:
        self.keys, self.operator = keys, {"Authorization": f"Bearer {keys.token()}"}
        super().__init__(session, base, self.operator)

    def as_customer(self, customer: dict, role: str = "contact") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.token(role, uuid.UUID(customer['id']))}"}

    async def call(self, method: str, path: str, expect: int | None = None, headers=None, **kw):
        status, body, _ = await self.request(method, path, expect, headers, **kw)
        return status, body

    async def contract(self, customer: dict, plan: dict, starts: str | None = None) -> dict:
        body = {"plan_id": plan["id"], "starts_on": starts or day(0)}
        return (await self.call("POST", f"/v1/customers/{customer['id']}/contracts", 201, json=body))[1]

    async def team(self, **fields) -> dict:
        body = {"name": f"Team {uuid.uuid4().hex[:8]}", **fields}
        return (await self.call("POST", "/v1/teams", 201, json=body))[1]

    async def join(self, team: dict, customer: dict, role: str = "member", headers=None) -> dict:
        body = {"customer_id": customer["id"], "role": role}
        return (await self.call("POST", f"/v1/teams/{team['id']}/members", 201, headers=headers, json=body))[1]

    async def consume(
        self, customer: dict, kind: str, amount: int, headers=None, key: str | None = None, reference: str | None = None
    ):
        return await self.call(
            "POST",
            f"/v1/customers/{customer['id']}/credits/consumptions",
            headers={**(headers or self.operator), "Idempotency-Key": key or uuid.uuid4().hex},
            json={"kind": kind, "amount": amount, "reference": reference or f"booking-{uuid.uuid4().hex[:6]}"},
        )

    async def grant(self, customer: dict, kind: str, amount: int) -> dict:
        return (
            await self.call(
                "POST",
                f"/v1/customers/{customer['id']}/credits/grants",
                201,
                json={"kind": kind, "amount": amount, "reference": "goodwill"},
            )
        )[1]

    async def credits(self, customer: dict) -> dict:
        return (await self.call("GET", f"/v1/customers/{customer['id']}/credits", 200))[1]

    async def access(self, customer: dict) -> dict:
        return (await self.call("GET", f"/v1/customers/{customer['id']}/access", 200))[1]


@pytest.fixture
async def env(system_factory, amqp, prefix, keys):
    clock = FakeClock(START)
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(clock=clock)
    await system.start("customers")
    async with aiohttp.ClientSession() as session:
        yield Api(session, system.urls["customers"], keys), clock, recorder


def payloads(recorder, key: str, **match) -> list[dict]:
    return [e["payload"] for e in recorder.of_type(key) if all(e["payload"].get(k) == v for k, v in match.items())]


async def test_teams_are_created_changed_listed_and_deleted_with_their_events(env):
    api, _, recorder = env
    payer = await api.customer("Paying Member")
    team = await api.team(name="Acme Ltd", paying_member_id=payer["id"], max_size=3, share_booking_credit=True)
    assert (team["member_count"], team["paying_member_id"], team["share_access"]) == (1, payer["id"], False)
    status, problem = await api.call("POST", "/v1/teams", json={"name": "ACME LTD"})
    assert status == 409 and problem["errors"][0]["field"] == "name"
    status, problem = await api.call("POST", "/v1/teams", json={"name": "", "max_size": 0, "share_access": "yes"})
    assert status == 422 and {e["field"] for e in problem["errors"]} == {"name", "max_size", "share_access"}
    status, problem = await api.call(
        "POST", "/v1/teams", json={"name": "Ghosts", "paying_member_id": str(uuid.uuid4())}
    )
    assert status == 422 and problem["errors"][0]["field"] == "paying_member_id"

    stranger = await api.customer()
    status, problem = await api.call("PATCH", f"/v1/teams/{team['id']}", json={"paying_member_id": stranger["id"]})
    assert status == 422 and problem["errors"][0]["field"] == "paying_member_id"
    _, changed = await api.call(
        "PATCH", f"/v1/teams/{team['id']}", 200, json={"share_printing_credit": True, "description": "Widgets"}
    )
    assert (changed["share_printing_credit"], changed["description"], changed["version"]) == (True, "Widgets", 3)
    status, _ = await api.call(
        "PATCH", f"/v1/teams/{team['id']}", headers={**api.operator, "If-Match": '"1"'}, json={"max_size": 5}
    )
    assert status == 412
    _, listed = await api.call("GET", "/v1/teams", 200, params={"q": "acme"})
    assert [t["id"] for t in listed["items"]] == [team["id"]]

    await api.call("DELETE", f"/v1/teams/{team['id']}", 204)
    await api.call("GET", f"/v1/teams/{team['id']}", 404)
    await api.call("POST", "/v1/teams", 201, json={"name": "Acme Ltd"})  # the name is free again

    [created] = await wait_for(lambda: payloads(recorder, "customers.team.created.v1", team_id=team["id"]))
    assert created["name"] == "Acme Ltd" and created["share_booking_credit"] is True
    [added] = await wait_for(lambda: payloads(recorder, "customers.team.member_added.v1", team_id=team["id"]))
    assert added["customer_id"] == payer["id"]
    [updated] = await wait_for(lambda: payloads(recorder, "customers.team.updated.v1", team_id=team["id"]))
    assert set(updated["changes"]) == {"share_printing_credit", "description"}
    [deleted] = await wait_for(lambda: payloads(recorder, "customers.team.deleted.v1", team_id=team["id"]))
    assert deleted["former_member_ids"] == [payer["id"]]
    sequences = [
        e["sequence"]
        for e in recorder.events
        if e["subject"] == team["id"] and e["event_type"].startswith("customers.team.")
    ]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4


async def test_the_roster_is_dated_limited_in_size_and_searchable(env):
    api, clock, _ = env
    a, b, c = await api.customer("Ann"), await api.customer("Bob"), await api.customer("Cid")
    team = await api.team(max_size=2)
    await api.join(team, a, role="admin")
    await api.join(team, b)
    status, problem = await api.call("POST", f"/v1/teams/{team['id']}/members", json={"customer_id": c["id"]})
    assert status == 409 and problem["type"] == "urn:problem:team-full"
    status, problem = await api.call("POST", f"/v1/teams/{team['id']}/members", json={"customer_id": a["id"]})
    assert status == 409 and problem["errors"][0]["field"] == "customer_id"
    _, found = await api.call("GET", "/v1/customers", 200, params={"team_id": team["id"]})
    assert {x["id"] for x in found["items"]} == {a["id"], b["id"]}
    _, teams_of_a = await api.call("GET", f"/v1/customers/{a['id']}/teams", 200, headers=api.as_customer(a))
    assert [(t["team_id"], t["role"]) for t in teams_of_a["items"]] == [(team["id"], "admin")]

    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{b['id']}", 204)
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{b['id']}", 404)
    await api.join(team, c)  # room again
    _, now = await api.call("GET", f"/v1/teams/{team['id']}/members", 200)
    assert {m["customer_id"] for m in now["items"]} == {a["id"], c["id"]}
    # a week on, Ann leaves; the dated memberships still say who was in the team on each day
    clock.advance(days=7)
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{a['id']}", 204)

    async def on(offset: int) -> set[str]:
        _, page = await api.call("GET", f"/v1/teams/{team['id']}/members", 200, params={"on": day(offset)})
        return {m["customer_id"] for m in page["items"]}

    assert await on(-1) == set()
    assert await on(0) == {a["id"], b["id"], c["id"]}
    assert await on(3) == {a["id"], c["id"]}
    assert await on(7) == {a["id"], c["id"]}
    assert await on(8) == {c["id"]}
    status, problem = await api.call("GET", f"/v1/teams/{team['id']}/members", params={"on": "yesterday"})
    assert status == 422 and problem["errors"][0]["field"] == "on"


async def test_team_administrators_manage_their_own_roster_and_nothing_else(env):
    api, _, _ = env
    admin = await api.customer("Adm")
    member, outsider, newcomer = await api.customer("Mem"), await api.customer("Out"), await api.customer("New")
    team = await api.team()
    other_team = await api.team()
    await api.join(team, admin, role="admin")
    await api.join(team, member)
    as_admin, as_member, as_outsider = api.as_customer(admin), api.as_customer(member), api.as_customer(outsider)

    # the administrator adds, promotes and removes with their own token
    await api.join(team, newcomer, headers=as_admin)
    await api.call(
        "PATCH", f"/v1/teams/{team['id']}/members/{newcomer['id']}", 200, headers=as_admin, json={"role": "admin"}
    )
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{newcomer['id']}", 204, headers=as_admin)
    await api.call("GET", f"/v1/teams/{team['id']}/members", 200, headers=as_admin)
    # ...but not another team, nor the team's settings
    await api.call(
        "POST", f"/v1/teams/{other_team['id']}/members", 403, headers=as_admin, json={"customer_id": newcomer["id"]}
    )
    await api.call("PATCH", f"/v1/teams/{team['id']}", 403, headers=as_admin, json={"share_access": True})
    await api.call("DELETE", f"/v1/teams/{team['id']}", 403, headers=as_admin)
    # a plain member reads the team, cannot manage it, may leave it
    await api.call("GET", f"/v1/teams/{team['id']}", 200, headers=as_member)
    await api.call(
        "POST", f"/v1/teams/{team['id']}/members", 403, headers=as_member, json={"customer_id": newcomer["id"]}
    )
    # an outsider sees nothing of it
    await api.call("GET", f"/v1/teams/{team['id']}", 403, headers=as_outsider)
    await api.call("GET", f"/v1/teams/{team['id']}/members", 403, headers=as_outsider)
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{member['id']}", 403, headers=as_outsider)
    await api.call("GET", "/v1/teams", 403, headers=as_outsider)
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{member['id']}", 204, headers=as_member)
    # a suspended administrator changes nothing
    await api.call("POST", f"/v1/customers/{admin['id']}/suspension", 201, json={"reason": "unpaid"})
    status, problem = await api.call(
        "POST", f"/v1/teams/{team['id']}/members", headers=as_admin, json={"customer_id": member["id"]}
    )
    assert status == 403 and problem["type"] == "urn:problem:customer-suspended"


async def test_plan_credit_is_granted_each_period_as_ledger_entries(env):
    api, clock, recorder = env
    customer = await api.customer()
    plan = await api.plan(booking=10, printing=100, period="month")
    contract = await api.contract(customer, plan)  # starts 31 January: periods start on month ends
    assert await api.credits(customer) == {
        "customer_id": customer["id"],
        "booking": {"own": 10, "available": 10},
        "printing": {"own": 100, "available": 100},
    }
    clock.advance(days=28)  # 28 February: the second period
    await wait_for(lambda: _own(api, customer, "booking", 20), what="second period granted")
    clock.advance(days=31)  # 31 March
    await wait_for(lambda: _own(api, customer, "booking", 30), what="third period granted")
    _, ledger = await api.call(
        "GET", f"/v1/customers/{customer['id']}/credits/entries", 200, params={"kind": "booking"}
    )
    assert [(e["reason"], e["amount"], e["period_start"]) for e in ledger["items"]] == [
        ("plan", 10, "2027-01-31"),
        ("plan", 10, "2027-02-28"),
        ("plan", 10, "2027-03-31"),
    ]
    assert {e["contract_id"] for e in ledger["items"]} == {contract["id"]}
    granted = await wait_for(
        lambda: (
            (g := payloads(recorder, "customers.credit.granted.v1", customer_id=customer["id"])) and len(g) == 6 and g
        )
    )
    assert sorted(g["balance_after"] for g in granted if g["kind"] == "booking") == [10, 20, 30]


async def _own(api: Api, customer: dict, kind: str, expected: int) -> bool:
    return (await api.credits(customer))[kind]["own"] == expected


async def test_consumption_draws_own_then_the_paying_member_then_the_others(env):
    api, _, recorder = env
    payer, mate, consumer, outsider = [await api.customer(n) for n in ("Pay", "Mate", "Con", "Out")]
    team = await api.team(paying_member_id=payer["id"], share_booking_credit=True)
    await api.join(team, mate)
    await api.join(team, consumer)
    await api.grant(mate, "booking", 5)  # mate joined before consumer, payer still comes first
    await api.grant(payer, "booking", 3)
    await api.grant(consumer, "booking", 2)
    await api.grant(outsider, "booking", 50)
    await api.grant(payer, "printing", 40)  # printing is not shared

    assert (await api.credits(consumer))["booking"] == {"own": 2, "available": 10}
    status, paid = await api.consume(consumer, "booking", 6)
    assert status == 201
    assert [(p["customer_id"], p["team_id"], p["amount"]) for p in paid["paid_by"]] == [
        (consumer["id"], None, 2),
        (payer["id"], team["id"], 3),
        (mate["id"], team["id"], 1),
    ]
    assert paid["own_balance_after"] == 0
    status, problem = await api.consume(consumer, "booking", 5)
    assert status == 409 and problem["available"] == 4 and problem["errors"][0]["field"] == "amount"
    status, problem = await api.consume(consumer, "printing", 1)
    assert status == 409 and problem["available"] == 0
    assert (await api.credits(mate))["booking"]["own"] == 4
    assert (await api.credits(outsider))["booking"]["own"] == 50
    [consumed] = await wait_for(lambda: payloads(recorder, "customers.credit.consumed.v1", customer_id=consumer["id"]))
    assert consumed["amount"] == 6 and [p["amount"] for p in consumed["paid_by"]] == [2, 3, 1]
    # the mate's ledger shows who drew on their balance and through which team
    _, ledger = await api.call("GET", f"/v1/customers/{mate['id']}/credits/entries", 200)
    draw = [e for e in ledger["items"] if e["reason"] == "consumption"]
    assert [(d["amount"], d["consumer_id"], d["team_id"]) for d in draw] == [(-1, consumer["id"], team["id"])]
    # the paying member leaves: the team has none any more, and says so
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{payer['id']}", 204)
    _, after = await api.call("GET", f"/v1/teams/{team['id']}", 200)
    assert after["paying_member_id"] is None
    [cleared] = await wait_for(lambda: payloads(recorder, "customers.team.updated.v1", team_id=team["id"]))
    assert cleared["changes"] == {"paying_member_id": {"old": payer["id"], "new": None}}
    # sharing off: the pool is gone
    await api.call("PATCH", f"/v1/teams/{team['id']}", 200, json={"share_booking_credit": False})
    assert (await api.credits(consumer))["booking"] == {"own": 0, "available": 0}


async def test_a_consumption_is_idempotent_needs_a_key_and_is_refused_while_suspended(env):
    api, _, recorder = env
    customer = await api.customer()
    await api.grant(customer, "printing", 10)
    as_self = api.as_customer(customer)
    first = await api.consume(customer, "printing", 4, headers=as_self, key="print-42", reference="job 42")
    again = await api.consume(customer, "printing", 4, headers=as_self, key="print-42", reference="job 42")
    assert first == again and first[0] == 201
    status, problem = await api.consume(customer, "printing", 5, headers=as_self, key="print-42", reference="job 42")
    assert status == 422  # the same key for another request is refused, not replayed
    assert (await api.credits(customer))["printing"]["own"] == 6
    status, problem = await api.call(
        "POST",
        f"/v1/customers/{customer['id']}/credits/consumptions",
        headers=as_self,
        json={"kind": "printing", "amount": 1, "reference": "x"},
    )
    assert status == 428 and problem["errors"][0]["field"] == "Idempotency-Key"
    status, problem = await api.call(
        "POST",
        f"/v1/customers/{customer['id']}/credits/consumptions",
        headers={**as_self, "Idempotency-Key": "k"},
        json={"kind": "coffee", "amount": 0, "reference": ""},
    )
    assert status == 422 and {e["field"] for e in problem["errors"]} == {"kind", "amount", "reference"}
    other = await api.customer()
    status, _ = await api.consume(other, "printing", 1, headers=as_self)
    assert status == 404  # another customer's credit does not exist for them

    await api.call("POST", f"/v1/customers/{customer['id']}/suspension", 201, json={"reason": "unpaid"})
    status, problem = await api.consume(customer, "printing", 1, headers=as_self)
    assert status == 403 and problem["type"] == "urn:problem:customer-suspended"
    status, problem = await api.consume(customer, "printing", 1)  # an operator acting for them
    assert status == 409 and problem["type"] == "urn:problem:suspended"
    assert (await api.credits(customer))["printing"]["own"] == 6
    await wait_for(lambda: payloads(recorder, "customers.credit.consumed.v1", customer_id=customer["id"]))
    assert len(payloads(recorder, "customers.credit.consumed.v1", customer_id=customer["id"])) == 1


async def test_concurrent_consumptions_never_take_the_same_credit_twice(env):
    api, _, _ = env
    payer, a, b = [await api.customer(n) for n in ("Pay", "Ann", "Bob")]
    team = await api.team(paying_member_id=payer["id"], share_booking_credit=True)
    await api.join(team, a)
    await api.join(team, b)
    await api.grant(payer, "booking", 7)
    await api.grant(a, "booking", 3)
    await api.grant(b, "booking", 2)
    results = await asyncio.gather(*(api.consume(who, "booking", 1) for who in [a, b] * 15))
    assert sorted(status for status, _ in results) == [201] * 12 + [409] * 18
    for who in (payer, a, b):
        assert (await api.credits(who))["booking"]["own"] == 0


def gray_code(bits: int) -> list[tuple[int, ...]]:
    """Every combination of ``bits`` switches, each differing from the previous in exactly one switch."""
    return [tuple((i ^ (i >> 1)) >> b & 1 for b in range(bits)) for i in range(2**bits)]


SWITCHES = ("x_member", "y_member", "x_suspended", "y_suspended", "share_access")


def expected_rule(state: dict[str, int], me: str, other: str) -> str:
    if state[f"{me}_suspended"]:
        return "suspended"
    if state[f"{me}_member"]:
        return "member"
    if state["share_access"] and state[f"{other}_member"] and not state[f"{other}_suspended"]:
        return "team"
    return "no_membership"


async def test_access_follows_every_combination_of_plan_suspension_and_team_sharing(env):
    """Walk all 32 combinations of two team mates' contracts and suspensions and the team's access switch, one
    switch at a time; after each change both customers' access says the right rule, and exactly one granted or
    revoked event went out for each customer whose access changed."""
    api, _, recorder = env
    x, y = await api.customer("Xena"), await api.customer("Yuri")
    plan = await api.plan()
    team = await api.team()
    await api.join(team, x)
    await api.join(team, y)
    people = {"x": x, "y": y}
    contracts: dict[str, str] = {}
    state = dict.fromkeys(SWITCHES, 0)
    expected_events = {"x": [], "y": []}

    async def flip(switch: str, on: int) -> None:
        who = switch[0]
        if switch == "share_access":
            await api.call("PATCH", f"/v1/teams/{team['id']}", 200, json={"share_access": bool(on)})
        elif switch.endswith("_member"):
            if on:
                contracts[who] = (await api.contract(people[who], plan))["id"]
            else:
                body = {"ends_on": day(-1), "reason": "switch off"}
                await api.call("POST", f"/v1/contracts/{contracts.pop(who)}/cancellation", 200, json=body)
        elif on:
            await api.call("POST", f"/v1/customers/{people[who]['id']}/suspension", 201, json={"reason": "test"})
        else:
            await api.call("DELETE", f"/v1/customers/{people[who]['id']}/suspension", 200)

    def access_events(who: str) -> list[tuple[str, str]]:
        found = [
            e
            for e in recorder.events
            if e["event_type"] in ("customers.access.granted", "customers.access.revoked")
            and e["payload"]["customer_id"] == people[who]["id"]
        ]
        return [
            (e["event_type"].rsplit(".", 1)[1], e["payload"]["rule"])
            for e in sorted(found, key=lambda e: e["sequence"])
        ]

    previous = {"x": "no_membership", "y": "no_membership"}
    for combo in gray_code(len(SWITCHES))[1:]:
        [(switch, on)] = [(s, v) for s, v in zip(SWITCHES, combo, strict=True) if state[s] != v]
        await flip(switch, on)
        state[switch] = on
        for me, other in (("x", "y"), ("y", "x")):
            rule = expected_rule(state, me, other)
            got = await api.access(people[me])
            assert (got["rule"], got["granted"]) == (rule, rule in ("member", "team")), (state, me, got)
            if (rule in ("member", "team")) != (previous[me] in ("member", "team")):
                expected_events[me].append(("granted" if rule in ("member", "team") else "revoked", rule))
            previous[me] = rule
        for me in ("x", "y"):
            await wait_for(lambda me=me: access_events(me) == expected_events[me], what=f"{me} events after {state}")
    assert expected_events["x"] and expected_events["y"]  # the walk did grant and revoke
    for me in ("x", "y"):  # the answer's sequence is that of the last access event
        assert (await api.access(people[me]))["sequence"] == len(expected_events[me])


async def test_removing_a_member_or_deleting_the_team_revokes_access_that_came_through_it(env):
    api, _, recorder = env
    member, guest1, guest2 = [await api.customer(n) for n in ("Member", "Guest1", "Guest2")]
    await api.contract(member, await api.plan())
    team = await api.team(share_access=True)
    for who in (member, guest1, guest2):
        await api.join(team, who)
    assert (await api.access(guest1))["rule"] == "team" and (await api.access(guest1))["team_id"] == team["id"]
    await api.call("DELETE", f"/v1/teams/{team['id']}/members/{guest1['id']}", 204)
    assert (await api.access(guest1))["rule"] == "no_membership"
    assert (await api.access(guest2))["granted"] is True
    await api.call("DELETE", f"/v1/teams/{team['id']}", 204)
    assert (await api.access(guest2))["granted"] is False
    assert (await api.access(member))["rule"] == "member"
    for guest in (guest1, guest2):
        await wait_for(
            lambda guest=guest: payloads(recorder, "customers.access.revoked.v1", customer_id=guest["id"]),
            what="revoked",
        )
        assert [p["rule"] for p in payloads(recorder, "customers.access.granted.v1", customer_id=guest["id"])] == [
            "team"
        ]


async def test_a_team_member_ending_their_plan_revokes_their_mates_access_in_time(env):
    api, clock, recorder = env
    member, guest = await api.customer("Member"), await api.customer("Guest")
    plan = await api.plan()
    await api.call(
        "POST",
        f"/v1/customers/{member['id']}/contracts",
        201,
        json={"plan_id": plan["id"], "starts_on": day(0), "ends_on": day(2)},
    )
    team = await api.team(share_access=True)
    await api.join(team, member)
    await api.join(team, guest)
    assert (await api.access(guest))["granted"] is True
    clock.advance(days=3)  # the scheduler ends the contract
    await wait_for(
        lambda: payloads(recorder, "customers.access.revoked.v1", customer_id=guest["id"]), what="guest revoked"
    )
    assert (await api.access(member))["rule"] == "no_membership"
    assert (await api.access(guest))["rule"] == "no_membership"


@pytest.mark.parametrize("role", ["member", "contact"])
async def test_customers_read_only_their_own_credit_and_access(env, role):
    api, _, _ = env
    me, other = await api.customer(), await api.customer()
    mine = api.as_customer(me, role)
    await api.call("GET", f"/v1/customers/{me['id']}/credits", 200, headers=mine)
    await api.call("GET", f"/v1/customers/{me['id']}/access", 200, headers=mine)
    for path in ("credits", "credits/entries", "access", "teams"):
        await api.call("GET", f"/v1/customers/{other['id']}/{path}", 404, headers=mine)
    await api.call(
        "POST",
        f"/v1/customers/{me['id']}/credits/grants",
        403,
        headers=mine,
        json={"kind": "booking", "amount": 1},
    )


def test_gray_code_visits_every_combination_once_one_switch_at_a_time():
    codes = gray_code(5)
    assert len(set(codes)) == 32 == len(codes)
    assert all(sum(a != b for a, b in zip(p, q, strict=True)) == 1 for p, q in itertools.pairwise(codes))


async def test_a_customer_in_several_teams_draws_only_on_those_that_share_in_the_order_joined(env):
    api, _, _ = env
    me, first_mate, second_mate, third_mate = [await api.customer(n) for n in ("Me", "First", "Second", "Third")]
    sharing_later = await api.team(share_booking_credit=True)
    not_sharing = await api.team(share_booking_credit=False, share_access=True)
    sharing_first = await api.team(share_booking_credit=True)
    await api.join(sharing_first, me)
    await api.join(sharing_first, first_mate)
    await api.join(not_sharing, me)
    await api.join(not_sharing, third_mate)
    await api.join(sharing_later, me)
    await api.join(sharing_later, second_mate)
    for mate in (first_mate, second_mate, third_mate):
        await api.grant(mate, "booking", 4)
    assert (await api.credits(me))["booking"] == {"own": 0, "available": 8}
    status, paid = await api.consume(me, "booking", 6)
    assert status == 201
    assert [(p["customer_id"], p["team_id"], p["amount"]) for p in paid["paid_by"]] == [
        (first_mate["id"], sharing_first["id"], 4),
        (second_mate["id"], sharing_later["id"], 2),
    ]
    assert (await api.credits(third_mate))["booking"]["own"] == 4
    # access comes through the one team that shares it, once its member has a contract
    assert (await api.access(me))["rule"] == "no_membership"
    await api.contract(third_mate, await api.plan())
    assert (await api.access(me))["team_id"] == not_sharing["id"]
    _, mine = await api.call("GET", f"/v1/customers/{me['id']}/teams", 200)
    assert [t["team_id"] for t in mine["items"]] == [sharing_first["id"], not_sharing["id"], sharing_later["id"]]
