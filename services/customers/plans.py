"""Plans and contracts: what a member signs up to, and the dates that make them a member."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from services.customers import domain, lifecycle
from services.customers.models import (
    CancellationCreate,
    Contract,
    ContractCreate,
    ContractPage,
    Plan,
    PlanCreate,
    PlanPage,
)
from services.customers.routes import CLOCK, TIMEZONE, _locked, actor_of
from services.customers.store import plain
from shared.auth import OPERATOR, policy
from shared.http import REQUEST_ID, Problem, json_response, parse_body, parse_uuid
from shared.openapi import describe
from shared.service import RUNTIME

routes = web.RouteTableDef()
PLAN_COLUMNS = (
    "id, name, description, price_minor, currency, billing_period, booking_credit, printing_credit, status, "
    "version, created_at, updated_at"
)


def contract_view(row: Any, today: Any) -> dict[str, Any]:
    c = domain.Contract(row["starts_on"], row["ends_on"], row["state"], row["cancelled_at"] is not None)
    out = plain(row)
    out["status"] = domain.status_on(c, today)
    out["cancellation"] = (
        {"reason": row["cancellation_reason"], "cancelled_at": row["cancelled_at"].isoformat()}
        if row["cancelled_at"]
        else None
    )
    for k in ("state", "cancellation_reason", "cancelled_at"):
        out.pop(k, None)
    return out


@routes.post("/v1/plans")
@describe(body=PlanCreate, response=Plan, status=201, errors=(409,), tag="plans")
@policy(OPERATOR)
async def create_plan(request: web.Request) -> web.Response:
    body = await parse_body(request, PlanCreate)
    try:
        row = await request.app[RUNTIME].db.fetchrow(
            f"""INSERT INTO plans (id, name, description, price_minor, currency, billing_period, booking_credit,
                                   printing_credit)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {PLAN_COLUMNS}""",
            uuid.uuid4(),
            body.name,
            body.description,
            body.price_minor,
            body.currency,
            body.billing_period,
            body.booking_credit,
            body.printing_credit,
        )
    except asyncpg.UniqueViolationError:
        raise Problem(
            409,
            "Plan name in use",
            "An active plan already has this name",
            type_="urn:problem:duplicate-plan",
            errors=[{"field": "name", "message": "already used by an active plan"}],
        ) from None
    return json_response(plain(row), status=201, headers={"Location": f"/v1/plans/{row['id']}"})


@routes.get("/v1/plans")
@describe(response=PlanPage, errors=(422,), tag="plans")
@policy(OPERATOR)
async def list_plans(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status not in (None, "active", "archived"):
        raise Problem(
            422,
            "Invalid request",
            "Invalid fields: status",
            type_="urn:problem:validation",
            errors=[{"field": "status", "message": "must be active or archived", "type": "enum"}],
        )
    rows = await request.app[RUNTIME].db.fetch(
        f"SELECT {PLAN_COLUMNS} FROM plans WHERE ($1::text IS NULL OR status = $1) ORDER BY lower(name), id",
        status,
    )
    return json_response({"items": [plain(r) for r in rows], "next_cursor": None})


@routes.get("/v1/plans/{id}")
@describe(response=Plan, tag="plans")
@policy(OPERATOR)
async def get_plan(request: web.Request) -> web.Response:
    plan_id = parse_uuid(request.match_info["id"])
    row = await request.app[RUNTIME].db.fetchrow(f"SELECT {PLAN_COLUMNS} FROM plans WHERE id = $1", plan_id)
    if row is None:
        raise Problem(404, "Not found", f"No plan {plan_id}")
    return json_response(plain(row))


@routes.post("/v1/plans/{id}/archive")
@describe(response=Plan, errors=(409,), tag="plans")
@policy(OPERATOR)
async def archive_plan(request: web.Request) -> web.Response:
    """An archived plan takes no new contracts; running contracts on it go on."""
    plan_id = parse_uuid(request.match_info["id"])
    row = await request.app[RUNTIME].db.fetchrow(
        f"""UPDATE plans SET status = 'archived', version = version + 1, updated_at = now()
            WHERE id = $1 AND status = 'active' RETURNING {PLAN_COLUMNS}""",
        plan_id,
    )
    if row is None:
        exists = await request.app[RUNTIME].db.fetchval("SELECT 1 FROM plans WHERE id = $1", plan_id)
        if exists:
            raise Problem(409, "Already archived", "The plan is already archived", type_="urn:problem:archived")
        raise Problem(404, "Not found", f"No plan {plan_id}")
    return json_response(plain(row))


@routes.post("/v1/customers/{id}/contracts")
@describe(body=ContractCreate, response=Contract, status=201, tag="contracts")
@policy(OPERATOR)
async def create_contract(request: web.Request) -> web.Response:
    """Put a customer under contract on an active plan. A contract already running today makes a contact a
    member at once; a future one does so on its start date (the scheduler)."""
    customer_id = parse_uuid(request.match_info["id"])
    body = await parse_body(request, ContractCreate)
    if body.ends_on is not None and body.ends_on < body.starts_on:
        raise Problem(
            422,
            "Invalid request",
            "Invalid fields: ends_on",
            type_="urn:problem:validation",
            errors=[{"field": "ends_on", "message": "must be on or after starts_on", "type": "date_order"}],
        )
    today = request.app[CLOCK].today(request.app[TIMEZONE])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        customer = await _locked(conn, customer_id)
        plan_status = await conn.fetchval("SELECT status FROM plans WHERE id = $1", body.plan_id)
        if plan_status != "active":
            raise Problem(
                422,
                "Invalid request",
                "Invalid fields: plan_id",
                type_="urn:problem:validation",
                errors=[
                    {
                        "field": "plan_id",
                        "message": "no such plan" if plan_status is None else "the plan is archived",
                        "type": "plan",
                    }
                ],
            )
        contract_id = uuid.uuid4()
        await conn.execute(
            """INSERT INTO contracts (id, customer_id, plan_id, starts_on, ends_on, original_ends_on)
               VALUES ($1, $2, $3, $4, $5, $5)""",
            contract_id,
            customer_id,
            body.plan_id,
            body.starts_on,
            body.ends_on,
        )
        actor = actor_of(request)
        await lifecycle.record(
            conn,
            customer_id,
            "contract.created",
            actor,
            {"contract_id": contract_id, "plan_id": body.plan_id, "starts_on": body.starts_on, "ends_on": body.ends_on},
            request[REQUEST_ID],
        )
        await lifecycle.advance(conn, customer, today, actor, request[REQUEST_ID], request[REQUEST_ID])
        row = await conn.fetchrow("SELECT * FROM contracts WHERE id = $1", contract_id)
    return json_response(contract_view(row, today), status=201, headers={"Location": f"/v1/contracts/{contract_id}"})


@routes.get("/v1/customers/{id}/contracts")
@describe(response=ContractPage, tag="contracts")
@policy(OPERATOR)
async def list_contracts(request: web.Request) -> web.Response:
    customer_id = parse_uuid(request.match_info["id"])
    db = request.app[RUNTIME].db
    if not await db.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id):
        raise Problem(404, "Not found", f"No customer {customer_id}")
    today = request.app[CLOCK].today(request.app[TIMEZONE])
    rows = await db.fetch("SELECT * FROM contracts WHERE customer_id = $1 ORDER BY starts_on, id", customer_id)
    return json_response({"items": [contract_view(r, today) for r in rows], "next_cursor": None})


@routes.get("/v1/contracts/{id}")
@describe(response=Contract, tag="contracts")
@policy(OPERATOR)
async def get_contract(request: web.Request) -> web.Response:
    contract_id = parse_uuid(request.match_info["id"])
    row = await request.app[RUNTIME].db.fetchrow("SELECT * FROM contracts WHERE id = $1", contract_id)
    if row is None:
        raise Problem(404, "Not found", f"No contract {contract_id}")
    return json_response(contract_view(row, request.app[CLOCK].today(request.app[TIMEZONE])))


@routes.post("/v1/contracts/{id}/cancellation")
@describe(body=CancellationCreate, response=Contract, errors=(409,), tag="contracts")
@policy(OPERATOR)
async def cancel_contract(request: web.Request) -> web.Response:
    """Cancel a contract: it ends after ``ends_on`` (today or earlier: at once), with a reason."""
    contract_id = parse_uuid(request.match_info["id"])
    body = await parse_body(request, CancellationCreate)
    today = request.app[CLOCK].today(request.app[TIMEZONE])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        customer_id = await conn.fetchval("SELECT customer_id FROM contracts WHERE id = $1", contract_id)
        if customer_id is None:
            raise Problem(404, "Not found", f"No contract {contract_id}")
        customer = await _locked(conn, customer_id)  # customer first, then contract: one lock order everywhere
        c = await conn.fetchrow("SELECT * FROM contracts WHERE id = $1 FOR UPDATE", contract_id)
        contract = domain.Contract(c["starts_on"], c["ends_on"], c["state"], c["cancelled_at"] is not None)
        problem = domain.cancellation_problem(contract, body.ends_on, today)
        if problem is not None:
            raise Problem(409, "Cannot cancel", f"Cannot cancel: {problem}", type_="urn:problem:cancellation")
        await conn.execute(
            """UPDATE contracts SET ends_on = $2, cancelled_at = now(), cancellation_reason = $3,
                   version = version + 1, updated_at = now() WHERE id = $1""",
            contract_id,
            body.ends_on,
            body.reason,
        )
        actor = actor_of(request)
        await lifecycle.record(
            conn,
            customer_id,
            "contract.cancelled",
            actor,
            {"contract_id": contract_id, "ends_on": body.ends_on, "reason": body.reason},
            request[REQUEST_ID],
        )
        await lifecycle.advance(conn, customer, today, actor, request[REQUEST_ID], request[REQUEST_ID])
        row = await conn.fetchrow("SELECT * FROM contracts WHERE id = $1", contract_id)
    return json_response(contract_view(row, today))
