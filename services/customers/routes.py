"""Thin HTTP handlers: parse -> store/outbox in one transaction -> respond."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from aiohttp import web

from services.customers import access, lifecycle, store
from services.customers.lifecycle import Actor
from services.customers.models import (
    Customer,
    CustomerCreate,
    CustomerPage,
    CustomerPatch,
    CustomerSearch,
    HistoryPage,
    HistoryQuery,
    Suspended,
    Suspension,
    SuspensionCreate,
    UserAccountRequested,
)
from shared.auth import CUSTOMER_ROLES, OPERATOR, operator_or_service, policy, principal, roles
from shared.clock import Clock
from shared.events import (
    CustomerCreatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    CustomerUserAccountRequestedV1,
    make_envelope,
)
from shared.http import (
    REQUEST_ID,
    Problem,
    json_response,
    parse_body,
    parse_query,
    parse_uuid,
)
from shared.idempotency import Idempotency
from shared.openapi import IDEMPOTENCY_KEY, IF_MATCH, describe
from shared.outbox import outbox_row
from shared.service import RUNTIME

CLOCK = web.AppKey("clock", Clock)
TIMEZONE = web.AppKey("timezone", ZoneInfo)

SERVICE = "customers"
routes = web.RouteTableDef()


CUSTOMER_FIELDS = tuple(Customer.model_fields)


def _customer(row: Any) -> dict[str, Any]:
    """The customer document of a row, as ``Customer`` documents it (times in UTC with ``Z``), built directly:
    it is on every read, and a model round trip cost a twentieth of a read's CPU."""
    out: dict[str, Any] = {}
    for name in CUSTOMER_FIELDS:
        value = row[name]
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        out[name] = value
    return out


def _customer_json(row: Any) -> bytes:
    """``_customer`` as JSON, for the read route, from a row of ``store.DOCUMENT_COLUMNS``: its columns are the
    document's fields, in order (checked below), UUIDs already text, and orjson writes UTC times with ``Z``."""
    return orjson.dumps(dict(row), option=orjson.OPT_UTC_Z)


assert tuple(c.strip() for c in store.COLUMNS.split(",")) == CUSTOMER_FIELDS, "store.COLUMNS lists Customer's fields"


@routes.post("/v1/customers")
@describe(
    body=CustomerCreate,
    response=Customer,
    status=201,
    errors=(409,),
    tag="customers",
    headers=IDEMPOTENCY_KEY,
)
@policy(operator_or_service("customers:write"))
async def create_customer(request: web.Request) -> web.Response:
    """Create a customer (a contact until a contract makes them a member). With ``send_welcome`` the accounts
    service creates their user account and notifications emails the welcome message."""
    body = await parse_body(request, CustomerCreate)
    idempotency = Idempotency.from_request(request, route="POST /v1/customers", body=body)
    rt = request.app[RUNTIME]
    customer_id = uuid.uuid4()
    actor = actor_of(request)
    envelope = make_envelope(
        CustomerCreatedV1(
            customer_id=customer_id,
            full_name=body.full_name,
            email=body.email,
            company_name=body.company_name,
            phone=body.phone,
            kind="contact",
            standing="active",
            send_welcome=body.send_welcome,
        ),
        producer=SERVICE,
        subject=customer_id,
        sequence=1,
        correlation_id=request[REQUEST_ID],
        causation_id=request[REQUEST_ID],
    )
    insert: dict[str, Any] = {
        "customer_id": customer_id,
        "full_name": body.full_name,
        "email": str(body.email),
        "company_name": body.company_name,
        "phone": body.phone,
        "history": (actor.type, actor.id, {"send_welcome": body.send_welcome}, request[REQUEST_ID]),
        "event": outbox_row(envelope, CustomerCreatedV1.EXCHANGE),
    }
    location = f"/v1/customers/{customer_id}"
    try:
        if idempotency.key is None:
            row = await store.insert_customer(rt.db, **insert)  # one statement: atomic without a transaction
            customer = _customer(row)
        else:
            async with rt.db.acquire() as conn, conn.transaction():
                if (replay := await idempotency.claim(conn)) is not None:
                    return replay
                row = await store.insert_customer(conn, **insert)
                customer = _customer(row)
                await idempotency.remember(conn, 201, customer, location)
    except store.DuplicateEmail:
        raise duplicate_email() from None
    return json_response(customer, status=201, headers={"Location": location, "ETag": f'"{row["version"]}"'})


def duplicate_email() -> Problem:
    return Problem(
        409,
        "Email already in use",
        "Another customer has this email address",
        type_="urn:problem:duplicate-email",
        errors=[{"field": "email", "message": "already used by another customer"}],
    )


def own_customer_id(request: web.Request) -> uuid.UUID:
    """The customer in the path, which a member or contact may only be themselves (anyone else: 404, so ids of
    other customers cannot be probed)."""
    customer_id = parse_uuid(request.match_info["id"])
    who = principal(request)
    if who.role in CUSTOMER_ROLES and who.customer_id != customer_id:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    return customer_id


@routes.get("/v1/customers/{id}")
@describe(response=Customer, tag="customers")
@policy(roles("admin", *CUSTOMER_ROLES, scope="customers:read"))
async def get_customer(request: web.Request) -> web.Response:
    """One customer: operators any, members and contacts themselves (also while suspended)."""
    customer_id = own_customer_id(request)
    row = await store.get_customer_document(request.app[RUNTIME].db, customer_id)
    if row is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    return web.Response(
        body=_customer_json(row), content_type="application/json", headers={"ETag": f'"{row["version"]}"'}
    )


@routes.get("/v1/customers")
@describe(query=CustomerSearch, response=CustomerPage, errors=(400,), tag="customers")
@policy(operator_or_service("customers:read"))
async def list_customers(request: web.Request) -> web.Response:
    """Search: ``q`` over name, email and company; filters; sort; keyset cursor pagination."""
    q = parse_query(request, CustomerSearch)
    after = None
    if q.cursor:
        try:
            after = store.decode_search_cursor(q.cursor, q.sort)
        except ValueError:
            raise Problem(
                400,
                "Invalid cursor",
                "The cursor is not one this API returned for this sort",
                type_="urn:problem:validation",
                errors=[{"field": "cursor", "message": "not a cursor from this API for this sort", "type": "cursor"}],
            ) from None
    rows = await store.search_customers(
        request.app[RUNTIME].db,
        q=q.q,
        email=q.email,
        kind=q.kind,
        standing=q.standing,
        has_user_account=q.has_user_account,
        team_id=q.team_id,
        created_after=q.created_after,
        created_before=q.created_before,
        sort=q.sort,
        after=after,
        limit=q.limit,
    )
    items = rows[: q.limit]
    next_cursor = store.encode_search_cursor(q.sort, items[-1]) if len(rows) > q.limit else None
    return json_response({"items": [_customer(r) for r in items], "next_cursor": next_cursor})


def actor_of(request: web.Request) -> Actor:
    who = principal(request)
    kind = {"admin": "operator", "service": "service"}.get(who.role, "customer")
    return Actor(kind, str(who.account_id))


async def _locked(conn: Any, customer_id: uuid.UUID) -> Any:
    row = await lifecycle.lock_customer(conn, customer_id)
    if row is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    if row["erased_at"] is not None:
        raise erased_problem()
    return row


def erased_problem() -> Problem:
    return Problem(
        409, "Customer erased", "The customer was erased: nothing about them changes", type_="urn:problem:erased"
    )


def _etag(row: Any) -> dict[str, str]:
    return {"ETag": f'"{row["version"]}"'}


@routes.patch("/v1/customers/{id}")
@describe(
    body=CustomerPatch,
    response=Customer,
    errors=(409, 412, 428),
    tag="customers",
    headers=IF_MATCH,
)
@policy(roles("admin", *CUSTOMER_ROLES, changes_state=True))
async def update_customer(request: web.Request) -> web.Response:
    """Change profile fields: operators for anyone, members and contacts for themselves (not while suspended).
    ``If-Match`` with the ETag is required: a stale version gets 412. The email stays unique (case-insensitive)
    and the login email follows it."""
    customer_id = own_customer_id(request)
    if_match = request.headers.get("If-Match")
    if if_match is None:
        raise Problem(
            428, "If-Match required", "Send If-Match with the customer's ETag", type_="urn:problem:precondition"
        )
    body = await parse_body(request, CustomerPatch)
    changes_in = body.model_dump(exclude_unset=True, mode="json")
    for required in ("full_name", "email"):
        if required in changes_in and changes_in[required] is None:
            raise Problem(
                422,
                "Invalid request",
                f"Invalid fields: {required}",
                type_="urn:problem:validation",
                errors=[{"field": required, "message": "cannot be cleared", "type": "required"}],
            )
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        row = await _locked(conn, customer_id)
        if if_match.strip().strip('"').removeprefix('W/"') != str(row["version"]) and if_match.strip() != "*":
            raise Problem(
                412,
                "Precondition failed",
                f"The customer changed (version {row['version']}); read it again",
                type_="urn:problem:stale-version",
                headers=_etag(row),
            )
        changes = {k: {"old": row[k], "new": v} for k, v in changes_in.items() if row[k] != v}
        if "email" in changes and row["email"].lower() == str(changes["email"]["new"]).lower():
            pass  # only the case changed: still a change, still unique
        if not changes:
            return json_response(_customer(row), headers=_etag(row))
        try:
            row = await lifecycle.bump(conn, customer_id, **{k: c["new"] for k, c in changes.items()})
        except asyncpg.UniqueViolationError:
            raise duplicate_email() from None
        await lifecycle.emit_customer_event(
            conn,
            row,
            CustomerUpdatedV1(
                customer_id=customer_id,
                kind=row["kind"],
                standing=row["standing"],
                changes=changes,
                full_name=row["full_name"],
                email=row["email"],
            ),
            request[REQUEST_ID],
            request[REQUEST_ID],
        )
        await lifecycle.record(conn, customer_id, "updated", actor_of(request), changes, request[REQUEST_ID])
    return json_response(_customer(row), headers=_etag(row))


@routes.get("/v1/customers/{id}/history")
@describe(query=HistoryQuery, response=HistoryPage, tag="customers")
@policy(OPERATOR)
async def history(request: web.Request) -> web.Response:
    """Every change of the customer: what, who (operator, the customer, the system scheduler), when, and the
    correlation id that ties it to a request and its events."""
    customer_id = parse_uuid(request.match_info["id"])
    q = parse_query(request, HistoryQuery)
    db = request.app[RUNTIME].db
    if await store.get_customer(db, customer_id) is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    rows = await db.fetch(
        """SELECT id, occurred_at, action, actor_type, actor_id, details, correlation_id FROM customer_history
           WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3""",
        customer_id,
        int(q.cursor or 0),
        q.limit + 1,
    )
    items = [
        {
            "action": r["action"],
            "occurred_at": r["occurred_at"].isoformat(),
            "actor": {"type": r["actor_type"], "id": r["actor_id"]},
            "details": r["details"],
            "correlation_id": r["correlation_id"],
        }
        for r in rows[: q.limit]
    ]
    next_cursor = str(rows[q.limit - 1]["id"]) if len(rows) > q.limit else None
    return json_response({"items": items, "next_cursor": next_cursor})


@routes.post("/v1/customers/{id}/user-account")
@describe(response=UserAccountRequested, status=202, errors=(409,), tag="customers")
@policy(OPERATOR)
async def request_user_account(request: web.Request) -> web.Response:
    """The operator's *create user account* action: accounts creates the account and the welcome message goes
    out, as at creation. A customer who has (or was already given) one: 409 with what is known of it."""
    customer_id = parse_uuid(request.match_info["id"])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        row = await _locked(conn, customer_id)
        if row["portal_access"] != "none":
            raise Problem(
                409,
                "User account exists",
                f"The customer already has a user account ({row['portal_access']})",
                type_="urn:problem:user-account-exists",
                portal_access=row["portal_access"],
                account_id=str(row["account_id"]) if row["account_id"] else None,
            )
        row = await lifecycle.bump(conn, customer_id, portal_access="requested")
        await lifecycle.emit_customer_event(
            conn,
            row,
            CustomerUserAccountRequestedV1(
                customer_id=customer_id,
                kind=row["kind"],
                standing=row["standing"],
                full_name=row["full_name"],
                email=row["email"],
            ),
            request[REQUEST_ID],
            request[REQUEST_ID],
        )
        await lifecycle.record(conn, customer_id, "user_account_requested", actor_of(request), {}, request[REQUEST_ID])
    return json_response({"customer_id": str(customer_id), "portal_access": "requested"}, status=202)


@routes.post("/v1/customers/{id}/suspension")
@describe(body=SuspensionCreate, response=Suspended, status=201, errors=(409,), tag="suspension")
@policy(OPERATOR)
async def suspend(request: web.Request) -> web.Response:
    """Suspend a member or contact, with a reason and optionally an end. Already suspended: 409. Suspension never
    ends contracts."""
    customer_id = parse_uuid(request.match_info["id"])
    body = await parse_body(request, SuspensionCreate)
    rt = request.app[RUNTIME]
    now = request.app[CLOCK].now()
    if body.until is not None and (body.until.tzinfo is None or body.until <= now):
        raise Problem(
            422,
            "Invalid request",
            "Invalid fields: until",
            type_="urn:problem:validation",
            errors=[{"field": "until", "message": "must be a future time with a time zone", "type": "future"}],
        )
    async with rt.db.acquire() as conn, conn.transaction():
        row = await _locked(conn, customer_id)
        if row["standing"] == "suspended":
            raise Problem(409, "Already suspended", "The customer is already suspended", type_="urn:problem:suspended")
        suspension_id = uuid.uuid4()
        await conn.execute(
            """INSERT INTO suspensions (id, customer_id, category, reason, until, created_by)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            suspension_id,
            customer_id,
            body.category,
            body.reason,
            body.until,
            str(principal(request).account_id),
        )
        row = await lifecycle.bump(conn, customer_id, standing="suspended")
        await lifecycle.emit_customer_event(
            conn,
            row,
            CustomerSuspendedV1(
                customer_id=customer_id,
                kind=row["kind"],
                standing="suspended",
                suspension_id=suspension_id,
                category=body.category,
                reason=body.reason,
                until=body.until,
            ),
            request[REQUEST_ID],
            request[REQUEST_ID],
        )
        await lifecycle.record(
            conn,
            customer_id,
            "suspended",
            actor_of(request),
            {"suspension_id": suspension_id, "category": body.category, "reason": body.reason, "until": body.until},
            request[REQUEST_ID],
        )
        await access.refresh_around(conn, customer_id, request[REQUEST_ID], request[REQUEST_ID])
    return json_response(
        {"suspension_id": str(suspension_id), "customer": _customer(row)},
        status=201,
        headers={"Location": f"/v1/customers/{customer_id}/suspension", **_etag(row)},
    )


@routes.get("/v1/customers/{id}/suspension")
@describe(response=Suspension, tag="suspension")
@policy(OPERATOR)
async def get_suspension(request: web.Request) -> web.Response:
    customer_id = parse_uuid(request.match_info["id"])
    row = await request.app[RUNTIME].db.fetchrow(
        """SELECT id, category, reason, until, created_at, created_by FROM suspensions
           WHERE customer_id = $1 AND lifted_at IS NULL""",
        customer_id,
    )
    if row is None:
        raise Problem(404, "Not suspended", f"Customer {customer_id} is not suspended (or does not exist)")
    return json_response({k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in dict(row).items()})


@routes.delete("/v1/customers/{id}/suspension")
@describe(response=Customer, errors=(409,), tag="suspension")
@policy(OPERATOR)
async def reactivate(request: web.Request) -> web.Response:
    """Lift the suspension. A customer in good standing: 409."""
    customer_id = parse_uuid(request.match_info["id"])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        row = await _locked(conn, customer_id)
        if row["standing"] != "suspended":
            raise Problem(409, "Not suspended", "The customer is not suspended", type_="urn:problem:not-suspended")
        row = await lifecycle.lift_suspension(conn, row, actor_of(request), request[REQUEST_ID], request[REQUEST_ID])
    return json_response(_customer(row), headers=_etag(row))
