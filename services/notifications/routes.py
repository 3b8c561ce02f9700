"""Thin HTTP handlers of the notifications service: what was sent to whom, and how it went."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import OPERATOR, operator_or_service, policy
from shared.http import Problem, decode_cursor, encode_cursor, json_response, parse_query, parse_uuid
from shared.openapi import describe
from shared.service import RUNTIME
from shared.text import SingleLine

routes = web.RouteTableDef()
COLUMNS = (
    "id, template, to_email, to_name, customer_id, account_id, subject, status, attempts, last_error, "
    "created_at, updated_at, sent_at, failed_at"
)


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: uuid.UUID | None = None
    template: SingleLine | None = Field(None, max_length=100)
    status: Literal["pending", "sent", "failed"] | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


class Delivery(BaseModel):
    id: uuid.UUID
    template: str
    to_email: str
    to_name: str
    customer_id: uuid.UUID | None
    account_id: uuid.UUID | None
    subject: str | None
    status: Literal["pending", "sent", "failed"]
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    failed_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


def _delivery(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, uuid.UUID):
            out[k] = str(v)
        elif isinstance(v, datetime):
            out[k] = v.isoformat()
    return out


@routes.get("/v1/deliveries")
@describe(query=DeliveryQuery, response=DeliveryPage, errors=(400,), tag="deliveries")
@policy(operator_or_service("deliveries:read"))
async def list_deliveries(request: web.Request) -> web.Response:
    q = parse_query(request, DeliveryQuery)
    after: tuple[datetime | None, uuid.UUID | None] = decode_cursor(q.cursor) if q.cursor else (None, None)
    rows = await request.app[RUNTIME].db.fetch(
        f"""SELECT {COLUMNS} FROM deliveries
            WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::text IS NULL OR template = $2)
              AND ($3::text IS NULL OR status = $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
            ORDER BY created_at, id LIMIT $6""",
        q.customer_id,
        q.template,
        q.status,
        after[0],
        after[1],
        q.limit + 1,
    )
    items = rows[: q.limit]
    next_cursor = encode_cursor(items[-1]["created_at"], items[-1]["id"]) if len(rows) > q.limit else None
    return json_response({"items": [_delivery(r) for r in items], "next_cursor": next_cursor})


class DeliveryExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: uuid.UUID


class DeliveryExport(BaseModel):
    deliveries: list[dict[str, Any]] = Field(description="Every email about the customer, with what it said")


@routes.get("/v1/deliveries/export")
@describe(query=DeliveryExportQuery, response=DeliveryExport, tag="privacy")
@policy(OPERATOR)
async def export_deliveries(request: web.Request) -> web.Response:
    """Everything notifications holds about one customer (right of access): their deliveries with recipient,
    subject and the values the email was rendered with (never the sealed secrets)."""
    q = parse_query(request, DeliveryExportQuery)
    rows = await request.app[RUNTIME].db.fetch(
        f"SELECT {COLUMNS}, context FROM deliveries WHERE customer_id = $1 ORDER BY created_at, id", q.customer_id
    )
    return json_response({"deliveries": [_delivery(r) for r in rows]})


@routes.get("/v1/deliveries/{id}")
@describe(response=Delivery, tag="deliveries")
@policy(OPERATOR)
async def get_delivery(request: web.Request) -> web.Response:
    delivery_id = parse_uuid(request.match_info["id"])
    row = await request.app[RUNTIME].db.fetchrow(f"SELECT {COLUMNS} FROM deliveries WHERE id = $1", delivery_id)
    if row is None:
        raise Problem(404, "Not found", f"No delivery {delivery_id}")
    return json_response(_delivery(row))
