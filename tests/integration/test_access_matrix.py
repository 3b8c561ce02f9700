"""The access matrix: every secured operation of the four services' live OpenAPI documents, called by every kind
of principal, answers the status its `security`, `x-roles`, `x-service-scope` and `x-refused-while-suspended`
promise (a route added later is covered without touching this file).

Principals: anonymous (401); an operator (allowed); a service client with the operation's scope (allowed) and
one holding every other scope (403); a member and a contact on their own resources (allowed when their role is in
`x-roles`, else 403) and on another customer's (404: ownership hides existence); a suspended contact (403
`customer-suspended` where the operation is refused while suspended, allowed otherwise). "Allowed" means neither
401 nor 403: the handler may still answer 2xx/404/409/422.

Teams (`/v1/teams/{id}...`): each customer above administers a team of their own (their "own" resource); another
customer's team is 403, not 404 (teams are not personal data whose existence ownership hides); and a plain member
of a team (not its administrator) may read it (GET) and is refused everything else (403).

Everything runs against one in-process system; the mismatches are collected and reported as one table.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from services.accounts import security
from tests.support.tokens import AUDIENCE, ISSUER, KeyRing
from tests.support.wait import wait_for

SERVICES = ("customers", "accounts", "visitors", "notifications")
SUSPENDED = "urn:problem:customer-suspended"
ALLOWED = "allowed"  # neither 401 nor 403
PARAM = re.compile(r"\{([^}]+)\}")


def token(
    keys: KeyRing,
    role: str,
    *,
    customer_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    standing: str = "active",
    scope: str | None = None,
) -> str:
    return security.issue_access_token(
        keys.key,
        account_id=account_id or uuid.uuid4(),
        customer_id=customer_id,
        role=role,
        standing=standing,
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_s=600,
        scope=scope,
    )


@dataclass
class Customer:
    """A customer and the resources the matrix addresses on their behalf (collection name -> id)."""

    id: uuid.UUID
    account_id: uuid.UUID
    resources: dict[str, str]


@dataclass(frozen=True)
class Case:
    service: str
    method: str
    path: str
    principal: str
    expected: str  # "401", "403", "404", SUSPENDED or ALLOWED
    token: str | None
    owner: Customer | None  # whose resources fill the path


class World:
    def __init__(self, http: aiohttp.ClientSession, urls: dict[str, str], operator: str) -> None:
        self.http, self.urls, self.operator = http, urls, operator

    async def call(self, service: str, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.urls[service] + path, headers=headers, **kw) as resp:
            body = await resp.json() if resp.content_type.endswith("json") else await resp.text()
            return resp.status, body

    async def ok(self, service: str, method: str, path: str, **kw: Any) -> Any:
        status, body = await self.call(service, method, path, self.operator, **kw)
        assert status < 300, (method, path, status, body)
        return body


async def make_customer(world: World, name: str) -> uuid.UUID:
    email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"
    body = await world.ok(
        "customers", "POST", "/v1/customers", json={"full_name": f"{name} Matrix", "email": email, "send_welcome": True}
    )
    return uuid.UUID(body["id"])


async def account_of(world: World, customer_id: uuid.UUID) -> uuid.UUID:
    async def found() -> str | None:
        status, body = await world.call("accounts", "GET", f"/v1/accounts?customer_id={customer_id}", world.operator)
        return body["items"][0]["id"] if status == 200 and body["items"] else None

    return uuid.UUID(await wait_for(found, what=f"the account of customer {customer_id}"))


async def visit_for(world: World, host: uuid.UUID) -> str:
    body = {
        "visitor": {"full_name": "Grace Hopper", "email": f"grace-{uuid.uuid4().hex[:6]}@example.org"},
        "host_customer_id": str(host),
        "purpose": "meeting",
        "expected_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
    }
    return str((await world.ok("visitors", "POST", "/v1/visits", json=body))["id"])


def collection_of(path: str, param: str) -> str:
    segments = path.strip("/").split("/")
    i = segments.index("{" + param + "}")
    return segments[i - 1] if i > 0 else param


def fill(path: str, owner: Customer | None, shared: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        collection = collection_of(path, m.group(1))
        if owner is not None and collection in owner.resources:
            return owner.resources[collection]
        return shared.get(collection, str(uuid.uuid4()))

    return PARAM.sub(one, path)


def cases_for(
    service: str,
    method: str,
    path: str,
    op: dict[str, Any],
    all_scopes: set[str],
    tokens: dict[str, str],
    people: dict[str, Customer],
    keys: KeyRing,
) -> list[Case]:
    roles = set(op.get("x-roles") or ())
    scope = op.get("x-service-scope")
    refused_suspended = bool(op.get("x-refused-while-suspended"))
    has_id = bool(PARAM.search(path))
    operator_target = people["operator-target"]

    def case(principal: str, expected: str, tok: str | None, owner: Customer | None) -> Case:
        return Case(service, method, path, principal, expected, tok, owner)

    out = [
        case("anonymous", "401", None, operator_target),
        case("operator", ALLOWED, tokens["operator"], operator_target),
    ]
    if scope:
        out.append(case(f"service+{scope}", ALLOWED, token(keys, "service", scope=scope), operator_target))
    others = " ".join(sorted(all_scopes - {scope})) or "unrelated:scope"
    out.append(case("service-without-scope", "403", token(keys, "service", scope=others), operator_target))
    for role in ("member", "contact"):
        me = people[role]
        if role not in roles:
            out.append(case(f"{role} (own)", "403", tokens[role], me))
            continue
        out.append(case(f"{role} (own)", ALLOWED, tokens[role], me))
        if has_id:
            out.append(case(f"{role} (another customer's)", "404", tokens[role], people["another"]))
    suspended = people["suspended"]
    team_route = path.startswith("/v1/teams/{id}")
    if team_route:
        out = [
            case(c.principal, "403", c.token, c.owner) if c.principal.endswith("(another customer's)") else c
            for c in out
        ]
        if roles & {"member", "contact"}:
            expected = ALLOWED if method == "GET" else "403"
            out.append(case("team member (not admin)", expected, tokens["teammate"], people["member"]))
    if "contact" not in roles:
        out.append(case("suspended contact", "403", tokens["suspended"], suspended))
    else:
        out.append(
            case("suspended contact", SUSPENDED if refused_suspended else ALLOWED, tokens["suspended"], suspended)
        )
    return out


def verdict(expected: str, status: int, body: Any) -> bool:
    if expected == ALLOWED:
        return status not in (401, 403)
    if expected == SUSPENDED:
        return status == 403 and isinstance(body, dict) and body.get("type") == SUSPENDED
    return status == int(expected)


async def test_every_secured_route_answers_each_principal_as_documented(
    system_factory: Any, keys: KeyRing, tmp_path: Path
) -> None:
    system = system_factory(mail_dir=tmp_path / "mail")
    await system.start()
    operator = keys.token()
    async with aiohttp.ClientSession() as http:
        world = World(http, system.urls, operator)

        # the data: customers with accounts (welcome) and visits, a plan, contracts; one customer suspended
        names = {"member": "Ada", "contact": "Carl", "another": "Bea", "suspended": "Sam", "operator-target": "Dora"}
        ids = {who: await make_customer(world, name) for who, name in names.items()}
        hosts = system.runtime("visitors").db

        async def replica_knows_everyone() -> bool:
            n = await hosts.fetchval(
                "SELECT count(*) FROM hosts WHERE customer_id = ANY($1::uuid[])", list(ids.values())
            )
            return n == len(ids)

        await wait_for(replica_knows_everyone, what="visitors to know every customer")
        plan = await world.ok(
            "customers",
            "POST",
            "/v1/plans",
            json={
                "name": f"Flex {uuid.uuid4().hex[:6]}",
                "price_minor": 19900,
                "currency": "EUR",
                "billing_period": "month",
            },
        )
        people: dict[str, Customer] = {}
        for who, cid in ids.items():
            contract = (
                await world.ok(
                    "customers",
                    "POST",
                    f"/v1/customers/{cid}/contracts",
                    json={"plan_id": plan["id"], "starts_on": date.today().isoformat()},
                )
                if who in ("member", "another", "operator-target")
                else None
            )
            account = await account_of(world, cid)
            people[who] = Customer(
                cid,
                account,
                {
                    "customers": str(cid),
                    "accounts": str(account),
                    "visits": await visit_for(world, cid),
                    **({"contracts": str(contract["id"])} if contract else {}),
                },
            )
        shared = {"plans": str(plan["id"])}

        # every customer administers a team of their own; the teammate is a plain member of the member's team
        teammate = await make_customer(world, "Tim")
        teammate_account = await account_of(world, teammate)
        for who, person in people.items():
            team = await world.ok("customers", "POST", "/v1/teams", json={"name": f"Team {who} {uuid.uuid4().hex[:6]}"})
            await world.ok(
                "customers",
                "POST",
                f"/v1/teams/{team['id']}/members",
                json={"customer_id": str(person.id), "role": "admin"},
            )
            person.resources["teams"] = team["id"]
        await world.ok(
            "customers",
            "POST",
            f"/v1/teams/{people['member'].resources['teams']}/members",
            json={"customer_id": str(teammate), "role": "member"},
        )

        sam = ids["suspended"]
        await world.ok(
            "customers", "POST", f"/v1/customers/{sam}/suspension", json={"reason": "matrix", "category": "manual"}
        )
        await wait_for(
            lambda: hosts.fetchval("SELECT standing = 'suspended' FROM hosts WHERE customer_id = $1", sam),
            what="visitors to learn the suspension from customers.customer.suspended.v1",
        )

        tokens = {
            "operator": operator,
            "member": token(keys, "member", customer_id=ids["member"], account_id=people["member"].account_id),
            "contact": token(keys, "contact", customer_id=ids["contact"], account_id=people["contact"].account_id),
            # issued before the suspension: still says active; each service's own standing must win
            "suspended": token(keys, "contact", customer_id=sam, account_id=people["suspended"].account_id),
            "teammate": token(keys, "contact", customer_id=teammate, account_id=teammate_account),
        }

        # the matrix, from the live documents
        documents = {svc: await world.ok(svc, "GET", "/openapi.json") for svc in SERVICES}
        operations = [
            (svc, method.upper(), path, op)
            for svc, doc in documents.items()
            for path, ops in doc["paths"].items()
            for method, op in ops.items()
            if isinstance(op, dict) and op.get("security")
        ]
        all_scopes = {op["x-service-scope"] for *_, op in operations if op.get("x-service-scope")}
        undocumented = [f"{s} {m} {p}" for s, m, p, op in operations if not op.get("x-roles")]
        assert not undocumented, f"secured operations without x-roles: {undocumented}"
        cases = [
            c
            for svc, method, path, op in operations
            for c in cases_for(svc, method, path, op, all_scopes, tokens, people, keys)
        ]

        # operators' calls reach handlers that change data (an erasure, a revocation): they run last
        cases.sort(key=lambda c: c.principal == "operator")
        mismatches = []
        for c in cases:
            op = documents[c.service]["paths"][c.path][c.method.lower()]
            kw: dict[str, Any] = {}
            if "requestBody" in op:
                kw["json"] = {}
            if c.method == "PATCH":
                kw["headers"] = {"If-Match": "*"}
            url = fill(c.path, c.owner, shared)
            status, body = await world.call(c.service, c.method, url, c.token, **kw)
            if not verdict(c.expected, status, body):
                problem = body.get("type", "") if isinstance(body, dict) else ""
                mismatches.append((c.service, c.method, c.path, c.principal, c.expected, f"{status} {problem}".strip()))

    print(f"\naccess matrix: {len(operations)} secured operations, {len(cases)} (route, principal) checks")
    if mismatches:
        widths = [max(len(str(row[i])) for row in [*mismatches, HEADER]) for i in range(len(HEADER))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in [HEADER, *mismatches]]
        raise AssertionError(f"{len(mismatches)} of {len(cases)} checks contradict the documents:\n" + "\n".join(lines))


HEADER = ("service", "method", "path", "principal", "expected", "got")
