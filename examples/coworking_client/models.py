"""Response models mirroring the schemas in docs/openapi/*.json (hand-written, tolerant of new fields).

Unknown fields are ignored so that a newer server (which may add fields within /v1) does not break this client.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

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


# customers: teams, credit, access -----------------------------------------------------------------------------

TeamRole = Literal["member", "admin"]
CreditKind = Literal["booking", "printing"]


class Team(Model):
    id: uuid.UUID
    name: str
    description: str
    paying_member_id: uuid.UUID | None
    """The member whose credit the team draws on first (a current member, or none)."""
    max_size: int | None
    share_booking_credit: bool
    share_printing_credit: bool
    share_access: bool
    """Members have space access while the team has an active member."""
    member_count: int
    """Current members."""
    version: int
    """The team's version; send it back as ``version`` to ``update_team`` (If-Match)."""
    created_at: datetime
    updated_at: datetime


class TeamMember(Model):
    team_id: uuid.UUID
    customer_id: uuid.UUID
    full_name: str
    role: TeamRole
    """``admin``: manages the team's roster with their own token."""
    joined_at: datetime
    left_at: datetime | None


class CreditGrant(Model):
    entry_id: int
    customer_id: uuid.UUID
    kind: CreditKind
    amount: int
    balance: int
    """The customer's own balance of this kind after the grant."""


class CreditDraw(Model):
    customer_id: uuid.UUID
    """Whose balance paid."""
    team_id: uuid.UUID | None
    """The sharing team, when it was not the consumer's own balance."""
    amount: int


class CreditConsumption(Model):
    consumption_id: uuid.UUID
    customer_id: uuid.UUID
    kind: CreditKind
    amount: int
    reference: str
    paid_by: list[CreditDraw]
    """The balances that paid, in order: the consumer's own, then the paying member's, then the other members'."""
    own_balance_after: int


class CreditBalance(Model):
    own: int
    """The customer's own balance."""
    available: int
    """What they can consume now: their own and their teams' shared credit."""


class CreditBalances(Model):
    customer_id: uuid.UUID
    booking: CreditBalance
    printing: CreditBalance


class Access(Model):
    customer_id: uuid.UUID
    granted: bool
    rule: Literal["member", "team", "suspended", "erased", "no_membership"]
    """The rule that granted (``member``, ``team``) or denied access."""
    team_id: uuid.UUID | None
    """Rule ``team``: the team whose active member grants access."""
    explanation: str


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
    """An RFC 9457 problem (``application/problem+json``). Members beyond the standard ones (``available`` in an
    insufficient-credit 409, ``max_size`` in a team-full 409...) are kept: see ``extensions``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] = []

    @property
    def extensions(self) -> dict[str, Any]:
        """The problem type's own members (RFC 9457 extension members), e.g. ``{"available": 3}``."""
        return dict(self.model_extra or {})
