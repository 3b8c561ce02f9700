"""Property-based (hypothesis): under random waves of grants and concurrent consumptions by the members of a team
that shares its credit, every balance equals the sum of its ledger entries, none is ever negative, every
consumption that succeeded is paid in full by its draws, and credit is neither created nor lost."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PEOPLE = 3
op = st.tuples(
    st.sampled_from(["grant", "consume"]),
    st.integers(min_value=0, max_value=PEOPLE - 1),
    st.sampled_from(["booking", "printing"]),
    st.integers(min_value=1, max_value=6),
)
waves = st.lists(st.lists(op, min_size=1, max_size=8), min_size=1, max_size=5)


@pytest.fixture
async def world(system_factory, keys):
    system = system_factory()
    await system.start("customers")
    async with aiohttp.ClientSession(
        base_url=system.urls["customers"], headers={"Authorization": f"Bearer {keys.token()}"}
    ) as http:
        yield http, system.runtime("customers").db


async def ok(http: aiohttp.ClientSession, method: str, path: str, **kw) -> dict:
    async with http.request(method, path, **kw) as resp:
        body = await resp.json()
        assert resp.status < 300, (path, resp.status, body)
        return body


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=waves)
async def test_balances_are_the_sum_of_entries_never_negative_and_conserved(world, plan):
    http, db = world
    people = []
    for i in range(PEOPLE):
        body = {"full_name": f"Prop {i}", "email": f"prop-{uuid.uuid4().hex[:10]}@example.com"}
        people.append((await ok(http, "POST", "/v1/customers", json=body))["id"])
    team = await ok(
        http,
        "POST",
        "/v1/teams",
        json={"name": f"Prop {uuid.uuid4().hex[:8]}", "paying_member_id": people[0], "share_booking_credit": True},
    )
    for who in people[1:]:
        await ok(http, "POST", f"/v1/teams/{team['id']}/members", json={"customer_id": who})

    granted = consumed = 0

    async def run(action: str, who: int, kind: str, amount: int) -> None:
        nonlocal granted, consumed
        path = f"/v1/customers/{people[who]}/credits/{'grants' if action == 'grant' else 'consumptions'}"
        body = {"kind": kind, "amount": amount, "reference": f"prop-{uuid.uuid4().hex[:6]}"}
        async with http.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}) as resp:
            answer = await resp.json()
            if resp.status == 201:
                if action == "grant":
                    granted += amount
                else:
                    consumed += amount
                    assert sum(d["amount"] for d in answer["paid_by"]) == amount
                    assert answer["paid_by"][0]["customer_id"] == people[who] or all(
                        d["team_id"] == team["id"] for d in answer["paid_by"]
                    )
                    if kind == "printing":  # not shared: only the consumer's own balance pays
                        assert {d["customer_id"] for d in answer["paid_by"]} == {people[who]}
            else:
                assert (action, resp.status, answer["type"]) == ("consume", 409, "urn:problem:insufficient-credit")
                assert 0 <= answer["available"] < amount  # refused only when the credit really was short

    for wave in plan:
        await asyncio.gather(*(run(*o) for o in wave))

    ids = [uuid.UUID(p) for p in people]
    rows = await db.fetch(
        """SELECT b.customer_id, b.kind, b.balance,
                  (SELECT coalesce(sum(e.amount), 0) FROM credit_entries e
                   WHERE e.customer_id = b.customer_id AND e.kind = b.kind) AS ledger
           FROM credit_balances b WHERE b.customer_id = ANY($1::uuid[])""",
        ids,
    )
    for r in rows:
        assert r["balance"] == r["ledger"], dict(r)
        assert r["balance"] >= 0, dict(r)
    assert sum(r["balance"] for r in rows) == granted - consumed
    draws = await db.fetch(
        """SELECT consumption_id, sum(-amount) AS paid FROM credit_entries
           WHERE consumer_id = ANY($1::uuid[]) GROUP BY consumption_id""",
        ids,
    )
    assert sum(d["paid"] for d in draws) == consumed
