"""Response models mirroring the schemas in docs/openapi/*.json (hand-written, tolerant of new fields).

Unknown fields are ignored so that a newer server (which may add fields within /v1) does not break this client.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# customers -----------------------------------------------------------------------------------------------------


class Customer(Model):
    id: uuid.UUID
    full_name: str
    email: str
    company_name: str | None
    phone: str | None
    kind: Literal["member", "contact"]
    standing: Literal["active", "suspended"]
    portal_access: Literal["none", "requested", "invited", "active", "suspended", "revoked"]
    account_id: uuid.UUID | None
    version: int
    """The customer's version; send it back as ``version`` to ``update_customer`` (If-Match)."""
    created_at: datetime
    updated_at: datetime


class Plan(Model):
    id: uuid.UUID
    name: str
    description: str
    price_minor: int
    currency: str
    billing_period: Literal["day", "week", "month", "year"]
    booking_credit: int
    printing_credit: int
    status: Literal["active", "archived"]
    version: int
    created_at: datetime
    updated_at: datetime


class ContractCancellation(Model):
    reason: str
    cancelled_at: datetime


class Contract(Model):
    id: uuid.UUID
    customer_id: uuid.UUID
    plan_id: uuid.UUID
    starts_on: date
    ends_on: date | None
    original_ends_on: date | None
    status: Literal["scheduled", "active", "ended", "cancelled"]
    cancellation: ContractCancellation | None
    version: int
    created_at: datetime
    updated_at: datetime


class Suspended(Model):
    suspension_id: uuid.UUID
    customer: Customer


class UserAccountRequested(Model):
    customer_id: uuid.UUID
    portal_access: str


# accounts ------------------------------------------------------------------------------------------------------


class TokenGrant(Model):
    access_token: str
    token_type: str
    expires_in: int


class Activated(Model):
    account_id: uuid.UUID
    status: str


# notifications -------------------------------------------------------------------------------------------------


class Delivery(Model):
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


# visitors ------------------------------------------------------------------------------------------------------


class VisitorIn(BaseModel):
    """The visitor in a registration (a request body: unknown fields are refused by the server, and here)."""

    model_config = ConfigDict(extra="forbid")

    full_name: str
    email: str
    company_name: str | None = None
    phone: str | None = None


class Visitor(Model):
    id: uuid.UUID
    full_name: str | None  # None once anonymised
    email: str | None
    company_name: str | None
    phone: str | None
    anonymised_at: datetime | None


class Visit(Model):
    id: uuid.UUID
    status: Literal["expected", "checked_in", "checked_out", "cancelled", "no_show"]
    purpose: Literal["tour", "meeting", "event", "other"]
    expected_at: datetime
    expected_departure_at: datetime | None
    notes: str | None
    check_in_code: str
    host_customer_id: uuid.UUID | None
    host_name: str | None
    visitor: Visitor
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    cancelled_at: datetime | None
    cancellation_reason: str | None
    no_show_at: datetime | None
    registered_by: str
    version: int
    created_at: datetime
    updated_at: datetime


# shared --------------------------------------------------------------------------------------------------------

T = TypeVar("T", bound=BaseModel)


class Page(Model, Generic[T]):
    """One page of a list; the client's ``list_*`` iterators follow ``next_cursor`` for you."""

    items: list[T]
    next_cursor: str | None


class FieldError(Model):
    field: str
    message: str
    type: str | None = None


class Problem(Model):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] = []
