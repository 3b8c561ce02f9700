"""What a customer is entitled to: their credit (balances, ledger, grants, consumptions) and their space access."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from services.customers import access, credit, store
from services.customers.models import (
    Access,
    CreditBalances,
    CreditConsumption,
    CreditConsumptionCreate,
    CreditEntryPage,
    CreditEntryQuery,
    CreditGrant,
    CreditGrantCreate,
)
from services.customers.routes import _locked, actor_of, own_customer_id
from services.customers.store import plain
from shared.auth import CUSTOMER_ROLES, OPERATOR, policy, roles
from shared.http import REQUEST_ID, Problem, json_response, parse_body, parse_query, parse_uuid
from shared.idempotency import Idempotency
from shared.openapi import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_REQUIRED, describe
from shared.service import RUNTIME

routes = web.RouteTableDef()


async def _exists(db: Any, customer_id: uuid.UUID) -> None:
    if await store.get_customer(db, customer_id) is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")


@routes.get("/v1/customers/{id}/credits")
@describe(response=CreditBalances, tag="credit")
@policy(roles("admin", *CUSTOMER_ROLES, scope="credits:read"))
async def balances(request: web.Request) -> web.Response:
    """The customer's booking and printing credit: their own balance, and what they can consume now (their own
    plus the credit of teams that share it)."""
    customer_id = own_customer_id(request)
    db = request.app[RUNTIME].db
    await _exists(db, customer_id)
    out: dict[str, Any] = {"customer_id": str(customer_id)}
    for kind in credit.KINDS:
        out[kind] = await credit.available(db, customer_id, kind)
    return json_response(out)


@routes.get("/v1/customers/{id}/credits/entries")
@describe(query=CreditEntryQuery, response=CreditEntryPage, tag="credit")
@policy(roles("admin", *CUSTOMER_ROLES, scope="credits:read"))
async def entries(request: web.Request) -> web.Response:
    """The ledger of the customer's own balances, oldest first: grants, and the draws of consumptions (theirs,
    and team mates' when a team shared this customer's credit)."""
    customer_id = own_customer_id(request)
    q = parse_query(request, CreditEntryQuery)
    db = request.app[RUNTIME].db
    await _exists(db, customer_id)
    rows = await db.fetch(
        """SELECT id, kind, amount, reason, reference, consumption_id, consumer_id, team_id, contract_id,
                  period_start, created_at
           FROM credit_entries WHERE customer_id = $1 AND ($2::text IS NULL OR kind = $2) AND id > $3
           ORDER BY id LIMIT $4""",
        customer_id,
        q.kind,
        int(q.cursor or 0),
        q.limit + 1,
    )
    items = rows[: q.limit]
    next_cursor = str(items[-1]["id"]) if len(rows) > q.limit else None
    return json_response({"items": [plain(r) for r in items], "next_cursor": next_cursor})


@routes.post("/v1/customers/{id}/credits/grants")
@describe(
    body=CreditGrantCreate, response=CreditGrant, status=201, errors=(409,), tag="credit", headers=IDEMPOTENCY_KEY
)
@policy(OPERATOR)
async def grant(request: web.Request) -> web.Response:
    """Grant credit by hand (an operator): a ledger entry with its reference and note."""
    customer_id = parse_uuid(request.match_info["id"])
    body = await parse_body(request, CreditGrantCreate)
    idempotency = Idempotency.from_request(request, route=f"POST /v1/customers/{customer_id}/credits/grants", body=body)
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        if (replay := await idempotency.claim(conn)) is not None:
            return replay
        await _locked(conn, customer_id)
        out = await credit.grant(
            conn,
            customer_id,
            body.kind,
            body.amount,
            reason="operator",
            reference=body.reference,
            note=body.note,
            created_by=actor_of(request).id,
            correlation_id=request[REQUEST_ID],
            causation_id=request[REQUEST_ID],
        )
        await idempotency.remember(conn, 201, out, None)
    return json_response(out, status=201)


@routes.post("/v1/customers/{id}/credits/consumptions")
@describe(
    body=CreditConsumptionCreate,
    response=CreditConsumption,
    status=201,
    errors=(409, 428),
    tag="credit",
    headers=IDEMPOTENCY_KEY_REQUIRED,
)
@policy(roles("admin", *CUSTOMER_ROLES, changes_state=True, scope="credits:write"))
async def consume(request: web.Request) -> web.Response:
    """Consume credit: the customer's own balance first, then the shared credit of their teams (the paying
    member's first); the answer says which balances paid. ``Idempotency-Key`` is required, so a retried request
    never consumes twice. Not enough credit: 409 ``urn:problem:insufficient-credit`` with ``available`` (the credit
    that could be consumed) beside the usual problem fields. A suspended customer cannot consume (409 for
    operators and services acting for them, 403 for their own token)."""
    customer_id = own_customer_id(request)
    if request.headers.get("Idempotency-Key") is None:
        raise Problem(
            428,
            "Idempotency-Key required",
            "Send an Idempotency-Key header: a retry with the same key never consumes twice",
            type_="urn:problem:precondition",
            errors=[{"field": "Idempotency-Key", "message": "required"}],
        )
    body = await parse_body(request, CreditConsumptionCreate)
    idempotency = Idempotency.from_request(
        request, route=f"POST /v1/customers/{customer_id}/credits/consumptions", body=body
    )
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        if (replay := await idempotency.claim(conn)) is not None:
            return replay
        row = await conn.fetchrow("SELECT standing, erased_at FROM customers WHERE id = $1 FOR SHARE", customer_id)
        if row is None:
            raise Problem(404, "Not found", f"No customer {customer_id}")
        if row["erased_at"] is not None:
            raise Problem(409, "Customer erased", "The customer was erased", type_="urn:problem:erased")
        if row["standing"] == "suspended":
            raise Problem(
                409, "Customer suspended", "A suspended customer cannot consume credit", type_="urn:problem:suspended"
            )
        try:
            out = await credit.consume(
                conn,
                customer_id,
                body.kind,
                body.amount,
                body.reference,
                created_by=actor_of(request).id,
                correlation_id=request[REQUEST_ID],
            )
        except credit.InsufficientCredit as exc:
            raise Problem(
                409,
                "Insufficient credit",
                f"{body.amount} {body.kind} credit asked, {exc.available} available",
                type_="urn:problem:insufficient-credit",
                errors=[{"field": "amount", "message": f"more than the {exc.available} available"}],
                available=exc.available,
            ) from None
        location = f"/v1/customers/{customer_id}/credits/entries"
        await idempotency.remember(conn, 201, out, None)
    return json_response(out, status=201, headers={"Location": location})


@routes.get("/v1/customers/{id}/access")
@describe(response=Access, tag="access")
@policy(roles("admin", *CUSTOMER_ROLES, scope="customers:read"))
async def get_access(request: web.Request) -> web.Response:
    """Effective space access now, with the rule that granted or denied it: an active member; a team sharing
    access that has an active member; never while suspended. ``sequence`` is that of the last
    ``customers.access.*`` event for the customer (read in the same snapshot): a door system that reads this and
    then applies only queued events with a higher sequence is never wrong."""
    customer_id = own_customer_id(request)
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        decision = await access.decide(conn, customer_id)
        if decision is None:
            raise Problem(404, "Not found", f"No customer {customer_id}")
        sequence = await conn.fetchval("SELECT version FROM customer_access WHERE customer_id = $1", customer_id)
    return json_response({**decision.view(customer_id), "sequence": sequence or 0})
