"""Right of access and right to erasure: everything customers holds about one customer as one JSON document, and
the erasure that anonymises it (in one transaction with the ``customers.customer.erased.v1`` event that makes
every other service do the same)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

from services.customers import access, lifecycle, store, teams
from services.customers.models import Customer
from services.customers.routes import CLOCK, _customer, actor_of
from shared.auth import OPERATOR, policy
from shared.events import CustomerErasedV1
from shared.http import REQUEST_ID, Problem, json_response, parse_uuid
from shared.openapi import describe
from shared.service import RUNTIME

routes = web.RouteTableDef()

ERASED_NAME = "erased"
# keys of customer_history.details that may hold personal data (profile values, free-text reasons)
PERSONAL_DETAIL_KEYS = ("reason", "full_name", "email", "company_name", "phone")


class CustomerExport(BaseModel):
    customer: Customer = Field(description="The customer record")
    history: list[dict[str, Any]] = Field(description="Every recorded change")
    contracts: list[dict[str, Any]] = Field(description="Contracts, with their plan's name")
    suspensions: list[dict[str, Any]] = Field(description="Suspensions, open and lifted")
    teams: list[dict[str, Any]] = Field(description="Team memberships, current and past, with their dates")
    credit_entries: list[dict[str, Any]] = Field(description="The credit ledger of the customer's own balances")
    access: dict[str, Any] = Field(description="Effective space access now, with its rule")


class ErasureAccepted(BaseModel):
    customer_id: uuid.UUID
    erased_at: datetime


def _plain(row: Any) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(dict(row), default=str))  # type: ignore[no-any-return]


@routes.get("/v1/customers/{id}/export")
@describe(response=CustomerExport, tag="privacy")
@policy(OPERATOR)
async def export_customer(request: web.Request) -> web.Response:
    """Everything the customers service holds about one customer (right of access): the record, its history,
    contracts, suspensions, team memberships, credit ledger and access. The other services export their part at
    their own ``export`` routes."""
    customer_id = parse_uuid(request.match_info["id"])
    db = request.app[RUNTIME].db
    row = await store.get_customer(db, customer_id)
    if row is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    history = await db.fetch(
        """SELECT occurred_at, action, actor_type, actor_id, details, correlation_id FROM customer_history
           WHERE customer_id = $1 ORDER BY id""",
        customer_id,
    )
    contracts = await db.fetch(
        """SELECT c.id, c.plan_id, p.name AS plan_name, c.starts_on, c.ends_on, c.state, c.cancelled_at,
                  c.cancellation_reason, c.created_at FROM contracts c JOIN plans p ON p.id = c.plan_id
           WHERE c.customer_id = $1 ORDER BY c.starts_on, c.created_at""",
        customer_id,
    )
    suspensions = await db.fetch(
        """SELECT id, category, reason, until, created_at, created_by, lifted_at, lifted_by FROM suspensions
           WHERE customer_id = $1 ORDER BY created_at""",
        customer_id,
    )
    memberships = await db.fetch(
        """SELECT m.team_id, t.name AS team_name, m.role, m.joined_at, m.left_at FROM team_memberships m
           JOIN teams t ON t.id = m.team_id WHERE m.customer_id = $1 ORDER BY m.joined_at, m.id""",
        customer_id,
    )
    ledger = await db.fetch(
        """SELECT id, kind, amount, reason, reference, consumption_id, consumer_id, team_id, contract_id, period_start,
                  created_at FROM credit_entries WHERE customer_id = $1 ORDER BY id""",
        customer_id,
    )
    decision = await access.decide(db, customer_id)
    return json_response(
        {
            "teams": [_plain(r) for r in memberships],
            "credit_entries": [_plain(r) for r in ledger],
            "access": decision.view(customer_id) if decision else {},
            "customer": _customer(row),
            "history": [_plain(r) for r in history],
            "contracts": [_plain(r) for r in contracts],
            "suspensions": [_plain(r) for r in suspensions],
        }
    )


@routes.post("/v1/customers/{id}/erasure")
@describe(response=ErasureAccepted, status=202, errors=(409,), tag="privacy")
@policy(OPERATOR)
async def erase_customer(request: web.Request) -> web.Response:
    """Erase the customer (right to erasure), in one transaction: name, email, company and phone replaced by
    placeholders, personal details removed from the history, suspension and cancellation reasons, the stored
    copies of events and idempotent responses about them deleted, and ``customers.customer.erased.v1``
    announced so that every service removes what it holds (202: they do it within seconds). The row, its
    contracts and dates stay. Already erased: 409."""
    customer_id = parse_uuid(request.match_info["id"])
    now = request.app[CLOCK].now()
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        row = await lifecycle.lock_customer(conn, customer_id)
        if row is None:
            raise Problem(404, "Not found", f"No customer {customer_id}")
        if row["erased_at"] is not None:
            raise Problem(409, "Already erased", "The customer was already erased", type_="urn:problem:erased")
        row = await lifecycle.bump(
            conn,
            customer_id,
            full_name=ERASED_NAME,
            email=f"erased-{customer_id}@invalid",
            company_name=None,
            phone=None,
            erased_at=now,
        )
        await conn.execute(
            """UPDATE customer_history SET details = CASE
                   WHEN action = 'updated' THEN jsonb_build_object('fields',
                       (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(details) k))
                   ELSE details - $2::text[] END
               WHERE customer_id = $1""",
            customer_id,
            list(PERSONAL_DETAIL_KEYS),
        )
        await conn.execute("UPDATE suspensions SET reason = 'erased' WHERE customer_id = $1", customer_id)
        await conn.execute(
            """UPDATE contracts SET cancellation_reason = 'erased'
               WHERE customer_id = $1 AND cancellation_reason IS NOT NULL""",
            customer_id,
        )
        # published copies of the events about them (kept a while for operators), unpublished customer facts
        # (the erasure supersedes them: nobody needs to learn a name that is gone), and replayable responses
        await conn.execute(
            """DELETE FROM outbox
               WHERE (published_at IS NOT NULL OR routing_key LIKE 'customers.customer.%')
                 AND convert_from(body, 'UTF8')::jsonb -> 'payload' ->> 'customer_id' = $1""",
            str(customer_id),
        )
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE strpos(response::text, $1) > 0 OR location LIKE '%' || $1 || '%'",
            str(customer_id),
        )
        await lifecycle.emit_customer_event(
            conn,
            row,
            CustomerErasedV1(customer_id=customer_id, erased_at=now),
            request[REQUEST_ID],
            request[REQUEST_ID],
        )
        await lifecycle.record(conn, customer_id, "erased", actor_of(request), {}, request[REQUEST_ID])
        # out of every team (a paying member no more), and no access: door systems learn it
        mates = await access.teammates(conn, customer_id)
        await teams.leave_all_teams(conn, customer_id, now, request[REQUEST_ID])
        await access.refresh(conn, [customer_id, *mates], request[REQUEST_ID], request[REQUEST_ID])
    return json_response({"customer_id": str(customer_id), "erased_at": now.isoformat()}, status=202)
