"""Right of access and right to erasure across the four services: an operator exports everything held about a
customer, then erases them; afterwards nothing personal about them is left in any table of any database, while
the non-personal records (the customer row, contracts, deliveries, visits) stay."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.integration.test_notifications import text_and_html
from tests.support.wait import wait_for

PASSWORD = "a long enough passphrase"

KNOWN_GAPS: set[tuple[str, str]] = set()


class Ops:
    def __init__(self, http: aiohttp.ClientSession, system: Any, token: str) -> None:
        self.http, self.system, self.token = http, system, token

    async def call(self, service: str, method: str, path: str, expect: int | None = None, **kw: Any):
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        async with self.http.request(method, self.system.urls[service] + path, headers=headers, **kw) as resp:
            body = await resp.json() if resp.content_type.endswith("json") else await resp.text()
            if expect is not None:
                assert resp.status == expect, (method, path, resp.status, body)
            return resp.status, body


@pytest.fixture
async def world(system_factory, keys, smtp):
    system = system_factory(smtp_port=smtp.port)
    await system.start()
    async with aiohttp.ClientSession() as http:
        yield Ops(http, system, keys.token()), system, smtp


async def scan(system: Any, needles: list[str]) -> list[tuple[str, str, str, str]]:
    """Every text, json, jsonb and bytea column of every table of the four databases, searched (directly in
    SQL) for each needle: (service, table, column, needle) of every hit."""
    hits = []
    for service in ("customers", "accounts", "visitors", "notifications"):
        conn = await asyncpg.connect(system.databases[service])
        try:
            columns = await conn.fetch(
                """SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
                   JOIN information_schema.tables t USING (table_schema, table_name)
                   WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                     AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'ARRAY')"""
            )
            assert {c["table_name"] for c in columns}, f"no tables found in {service}"
            for table, column, data_type in columns:
                for needle in needles:
                    if data_type == "bytea":
                        sql = (
                            f'SELECT count(*) FROM "{table}" WHERE position(convert_to($1, \'UTF8\') in "{column}") > 0'
                        )
                    else:
                        sql = f'SELECT count(*) FROM "{table}" WHERE strpos(lower("{column}"::text), lower($1)) > 0'
                    if await conn.fetchval(sql, needle):
                        hits.append((service, table, column, needle))
        finally:
            await conn.close()
    return hits


async def test_an_operator_exports_then_erases_a_customer_and_nothing_personal_remains_anywhere(world):
    ops, system, smtp = world
    tag = uuid.uuid4().hex[:6]
    name = f"Zephyrine Quillfeather{tag}"
    email = f"zq-{tag}@example.com"
    phone = f"+44 20 7946 {int(tag, 16) % 10000:04d}"
    company = f"Quillworks {tag}"
    reason = f"asked for a pause, says {name}"

    # a customer with the welcome email, who activates and logs in
    _, customer = await ops.call(
        "customers",
        "POST",
        "/v1/customers",
        201,
        json={"full_name": name, "email": email, "phone": phone, "company_name": company, "send_welcome": True},
    )
    cid = customer["id"]
    [welcome] = await wait_for(lambda: smtp.to(email), timeout=15, what="the welcome email")
    link = re.search(r"activate#token=(\S+)", text_and_html(welcome)[0])
    assert link
    await ops.call("accounts", "POST", "/v1/activations", 200, json={"token": link.group(1), "password": PASSWORD})
    _, grant = await ops.call("accounts", "POST", "/v1/tokens", 200, json={"email": email, "password": PASSWORD})

    # a plan and a running contract, a visit they host (checked in and out), then a suspension
    _, plan = await ops.call(
        "customers",
        "POST",
        "/v1/plans",
        201,
        json={"name": f"Desk {tag}", "price_minor": 100, "currency": "EUR", "billing_period": "month"},
    )
    _, contract = await ops.call(
        "customers",
        "POST",
        f"/v1/customers/{cid}/contracts",
        201,
        json={"plan_id": plan["id"], "starts_on": date.today().isoformat()},
    )
    _, team = await ops.call("customers", "POST", "/v1/teams", 201, json={"name": f"Team {tag}", "share_access": True})
    await ops.call("customers", "POST", f"/v1/teams/{team['id']}/members", 201, json={"customer_id": cid})
    visitors_db = system.runtime("visitors").db
    await wait_for(
        lambda: visitors_db.fetchval("SELECT email IS NOT NULL FROM hosts WHERE customer_id = $1", uuid.UUID(cid)),
        what="visitors to know the host",
    )
    expected = datetime.now(UTC) + timedelta(hours=1)
    _, visit = await ops.call(
        "visitors",
        "POST",
        "/v1/visits",
        201,
        json={
            "visitor": {"full_name": "Grace Hopper", "email": f"grace-{tag}@example.org"},
            "host_customer_id": cid,
            "purpose": "meeting",
            "expected_at": expected.isoformat(),
        },
    )
    assert visit["host_name"] == name
    await ops.call("visitors", "POST", f"/v1/visits/{visit['id']}/check-in", 200)
    await ops.call("visitors", "POST", f"/v1/visits/{visit['id']}/check-out", 200)
    await ops.call(
        "customers", "POST", f"/v1/customers/{cid}/suspension", 201, json={"reason": reason, "category": "manual"}
    )
    await wait_for(lambda: len(smtp.to(email)) >= 2, timeout=15, what="the host's visitor-arrived email")

    async def deliveries() -> list[dict]:
        return (await ops.call("notifications", "GET", f"/v1/deliveries?customer_id={cid}", 200))[1]["items"]

    await wait_for(lambda: _all_sent(deliveries()), timeout=15, what="the customer's deliveries to be sent")

    # export: each service's part holds what it has about them
    _, mine = await ops.call("customers", "GET", f"/v1/customers/{cid}/export", 200)
    assert mine["customer"]["email"] == email and mine["customer"]["phone"] == phone
    assert [c["id"] for c in mine["contracts"]] == [contract["id"]]
    assert [s["reason"] for s in mine["suspensions"]] == [reason]
    assert [h["action"] for h in mine["history"]][:1] == ["created"]
    assert [(t["team_id"], t["left_at"]) for t in mine["teams"]] == [(team["id"], None)]
    assert mine["access"]["rule"] == "suspended"  # a member, suspended above
    assert {e["reason"] for e in mine["credit_entries"]} <= {"plan"}
    _, acc = await ops.call("accounts", "GET", f"/v1/accounts/export?customer_id={cid}", 200)
    assert [(a["email"], a["full_name"], a["status"]) for a in acc["accounts"]] == [(email, name, "suspended")]
    assert acc["links"] and acc["logins"] and "token_hash" not in acc["links"][0]
    _, visits = await ops.call("visitors", "GET", f"/v1/visits?host_customer_id={cid}", 200)
    assert [(v["id"], v["host_name"]) for v in visits["items"]] == [(visit["id"], name)]
    _, notes = await ops.call("notifications", "GET", f"/v1/deliveries/export?customer_id={cid}", 200)
    assert {d["template"] for d in notes["deliveries"]} == {"welcome", "host_visitor_arrived"}
    assert {d["to_email"] for d in notes["deliveries"]} == {email}

    # erase: 202, then every service handles the event; a second erasure is a 409
    _, erased = await ops.call("customers", "POST", f"/v1/customers/{cid}/erasure", 202)
    assert erased["customer_id"] == cid
    await ops.call("customers", "POST", f"/v1/customers/{cid}/erasure", 409)

    accounts_db, notifications_db = system.runtime("accounts").db, system.runtime("notifications").db
    await wait_for(
        lambda: accounts_db.fetchval(
            "SELECT erased_at IS NOT NULL FROM accounts WHERE customer_id = $1", uuid.UUID(cid)
        ),
        what="accounts to erase the account",
    )
    await wait_for(
        lambda: visitors_db.fetchval("SELECT erased_at IS NOT NULL FROM hosts WHERE customer_id = $1", uuid.UUID(cid)),
        what="visitors to erase the host",
    )
    await wait_for(
        lambda: notifications_db.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = 'notifications.customer-events'"
        ),
        what="notifications to redact the deliveries",
    )
    await wait_for(
        lambda: _get(ops, "customers", f"/v1/customers/{cid}", lambda c: c["portal_access"] == "revoked"),
        what="customers to learn the account was revoked",
    )
    for service in ("customers", "accounts", "visitors", "notifications"):
        await wait_for(
            lambda s=service: system.runtime(s).db.fetchval(  # type: ignore[misc]
                "SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"
            ),
            what=f"{service}'s outbox to be relayed",
        )

    # nothing personal remains in any table of any database
    hits = await scan(system, [name, email, phone, company, reason])
    assert [h for h in hits if (h[0], h[1]) not in KNOWN_GAPS] == []

    # the non-personal records stay
    _, after = await ops.call("customers", "GET", f"/v1/customers/{cid}", 200)
    assert after["erased_at"] and after["full_name"] == "erased" and after["phone"] is None
    assert after["company_name"] is None and after["kind"] == "member"
    _, kept = await ops.call("customers", "GET", f"/v1/contracts/{contract['id']}", 200)
    assert kept["status"] == "active"
    kept_deliveries = await deliveries()
    assert {(d["template"], d["status"]) for d in kept_deliveries} == {
        ("welcome", "sent"),
        ("host_visitor_arrived", "sent"),
    }
    assert all(d["sent_at"] for d in kept_deliveries)
    _, kept_visit = await ops.call("visitors", "GET", f"/v1/visits/{visit['id']}", 200)
    assert kept_visit["status"] == "checked_out" and kept_visit["checked_in_at"] and kept_visit["host_name"] is None
    _, history = await ops.call("customers", "GET", f"/v1/customers/{cid}/history", 200)
    assert "erased" in [h["action"] for h in history["items"]]
    # out of every team, and no space access any more
    _, roster = await ops.call("customers", "GET", f"/v1/teams/{team['id']}/members", 200)
    assert roster["items"] == []
    _, no_access = await ops.call("customers", "GET", f"/v1/customers/{cid}/access", 200)
    assert (no_access["granted"], no_access["rule"]) == (False, "erased")

    # the person cannot log in or refresh any more, and nothing about them changes
    await ops.call("accounts", "POST", "/v1/tokens", 401, json={"email": email, "password": PASSWORD})
    await ops.call(
        "accounts",
        "POST",
        "/v1/tokens",
        400,
        json={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
    )
    await ops.call(
        "customers", "PATCH", f"/v1/customers/{cid}", 409, json={"phone": "+1 555 0100"}, headers={"If-Match": "*"}
    )
    await ops.call("customers", "DELETE", f"/v1/customers/{cid}/suspension", 409)
    account_id = acc["accounts"][0]["id"]
    await ops.call("accounts", "DELETE", f"/v1/accounts/{account_id}/revocation", 409)


async def _all_sent(items: Any) -> bool:
    found = await items
    return len(found) == 2 and all(d["status"] == "sent" for d in found)


async def _get(ops: Ops, service: str, path: str, check: Any) -> bool:
    status, body = await ops.call(service, "GET", path)
    return status == 200 and check(body)
