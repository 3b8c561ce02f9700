"""Thin HTTP handlers: parse -> store/outbox in one transaction -> respond."""

from __future__ import annotations

import hashlib
import uuid

import orjson
from aiohttp import web

from services.customers import store
from services.customers.models import Customer, CustomerCreate, CustomerQuery
from shared.auth import OPERATOR, policy, principal
from shared.events import CustomerCreatedV1
from shared.http import (
    REQUEST_ID,
    VISIBLE_ASCII,
    Problem,
    decode_cursor,
    encode_cursor,
    json_response,
    parse_body,
    parse_query,
    parse_uuid,
)
from shared.outbox import emit
from shared.service import RUNTIME

SERVICE = "customers"
routes = web.RouteTableDef()


def _customer(row: object) -> dict:
    return Customer.model_validate(dict(row)).model_dump(mode="json")  # type: ignore[call-overload]


@routes.post("/v1/customers")
@policy(OPERATOR)
async def create_customer(request: web.Request) -> web.Response:
    """Create a customer (a contact until a contract makes them a member). With ``send_welcome`` the accounts
    service creates their user account and notifications emails the welcome message."""
    body = await parse_body(request, CustomerCreate)
    idem_key = request.headers.get("Idempotency-Key")
    if idem_key is not None and not (len(idem_key) <= 200 and VISIBLE_ASCII.fullmatch(idem_key)):
        raise Problem(
            400,
            "Invalid Idempotency-Key",
            "Idempotency-Key must be 1 to 200 visible ASCII characters",
            type_="urn:problem:validation",
            errors=[{"field": "Idempotency-Key", "message": "must be 1 to 200 visible ASCII characters"}],
        )
    scope = f"{principal(request).account_id}:POST /v1/customers"
    request_hash = hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        if idem_key is not None:
            first = await store.claim_idempotency_key(conn, scope, idem_key, request_hash)
            if first is not None:
                if first["request_hash"] != request_hash:
                    raise Problem(
                        422,
                        "Idempotency-Key reused",
                        "This Idempotency-Key was used with a different body",
                        type_="urn:problem:idempotency-key-reused",
                    )
                headers = {"Idempotent-Replayed": "true"}
                if first["location"]:
                    headers["Location"] = first["location"]
                return json_response(first["response"], status=first["status"], headers=headers)
        customer_id = uuid.uuid4()
        try:
            row = await store.insert_customer(
                conn,
                customer_id=customer_id,
                full_name=body.full_name,
                email=str(body.email),
                company_name=body.company_name,
                phone=body.phone,
            )
        except store.DuplicateEmail:
            raise Problem(
                409,
                "Email already in use",
                "Another customer has this email address",
                type_="urn:problem:duplicate-email",
                errors=[{"field": "email", "message": "already used by another customer"}],
            ) from None
        customer = _customer(row)
        await emit(
            conn,
            CustomerCreatedV1(
                customer_id=customer_id,
                full_name=row["full_name"],
                email=row["email"],
                company_name=row["company_name"],
                phone=row["phone"],
                kind=row["kind"],
                standing=row["standing"],
                send_welcome=body.send_welcome,
            ),
            producer=SERVICE,
            subject=customer_id,
            sequence=row["version"],
            correlation_id=request[REQUEST_ID],
            causation_id=request[REQUEST_ID],
        )
        location = f"/v1/customers/{customer_id}"
        if idem_key is not None:
            await store.store_idempotent_response(conn, scope, idem_key, 201, customer, location)
    return json_response(customer, status=201, headers={"Location": location, "ETag": f'"{row["version"]}"'})


@routes.get("/v1/customers/{id}")
@policy(OPERATOR)
async def get_customer(request: web.Request) -> web.Response:
    customer_id = parse_uuid(request.match_info["id"])
    row = await store.get_customer(request.app[RUNTIME].db, customer_id)
    if row is None:
        raise Problem(404, "Not found", f"No customer {customer_id}")
    return json_response(_customer(row), headers={"ETag": f'"{row["version"]}"'})


@routes.get("/v1/customers")
@policy(OPERATOR)
async def list_customers(request: web.Request) -> web.Response:
    q = parse_query(request, CustomerQuery)
    after = decode_cursor(q.cursor) if q.cursor else None
    rows = await store.list_customers(
        request.app[RUNTIME].db, email=q.email, kind=q.kind, standing=q.standing, after=after, limit=q.limit
    )
    items = rows[: q.limit]
    next_cursor = None
    if len(rows) > q.limit:
        last = items[-1]
        next_cursor = encode_cursor(last["created_at"], last["id"])
    return json_response({"items": [_customer(r) for r in items], "next_cursor": next_cursor})
