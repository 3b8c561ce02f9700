"""Request and response models of the customers API (validated at the edge, documented in OpenAPI)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

from shared.text import ISO_TEXT, NO_NUL, SINGLE_LINE, Email, SingleLine

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), SINGLE_LINE]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40, pattern=r"^\+?[0-9 ().\-/]+$")
]


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full_name: Name = Field(description="The customer's full name")
    email: Email = Field(description="Email address; unique among customers (case-insensitive)")
    company_name: Name | None = Field(None, description="Company")
    phone: Phone | None = Field(None, description="Phone number")
    send_welcome: StrictBool = Field(
        False, description="Create a user account and email the welcome message with the set-password link"
    )


class Customer(BaseModel):
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
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = None


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=500)
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None


class CustomerPatch(BaseModel):
    """Only the fields sent change; ``null`` clears the optional ones."""

    model_config = ConfigDict(extra="forbid")

    full_name: Name | None = None
    email: Email | None = None
    company_name: Name | None = None
    phone: Phone | None = None


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
FreeText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), NO_NUL]


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Plan name, unique among active plans")
    description: FreeText = Field("", description="What the plan includes")
    price_minor: StrictInt = Field(ge=0, le=10**12, description="Price per billing period in minor units (cents)")
    currency: Currency = Field(description="ISO 4217 code, e.g. EUR")
    billing_period: Literal["day", "week", "month", "year"] = Field(description="How often the price is billed")
    booking_credit: StrictInt = Field(0, ge=0, le=10**9, description="Booking credit included per period")
    printing_credit: StrictInt = Field(0, ge=0, le=10**9, description="Printing credit included per period")


class ContractCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: uuid.UUID = Field(description="An active plan")
    starts_on: Annotated[date, ISO_TEXT] = Field(description="First day (may be in the past, today or the future)")
    ends_on: Annotated[date, ISO_TEXT] | None = Field(
        None, description="Last day (included); none for an open-ended contract"
    )


class CancellationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ends_on: Annotated[date, ISO_TEXT] = Field(
        description="The contract's new last day (the day before it starts: it never starts)"
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), NO_NUL]


class SuspensionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), NO_NUL] = Field(
        description="Why, in the operator's words"
    )
    category: Literal["manual", "overdue", "policy", "other"] = Field("manual", description="Why, as a category")
    until: Annotated[datetime, ISO_TEXT] | None = Field(
        None, description="When the suspension ends by itself (future, with a zone)"
    )


class CustomerSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: SingleLine | None = Field(None, max_length=200, description="Text in name, email or company")
    email: SingleLine | None = Field(None, max_length=320, description="Exact email (case-insensitive)")
    kind: Literal["member", "contact"] | None = None
    standing: Literal["active", "suspended"] | None = None
    has_user_account: bool | None = Field(None, description="Whether the customer has (or was invited to) an account")
    team_id: uuid.UUID | None = Field(None, description="Current members of this team")
    created_after: datetime | None = None
    created_before: datetime | None = None
    sort: Literal["created_at", "-created_at", "full_name", "-full_name"] = "created_at"
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=500)


# Response documents (the handlers build plain dicts; these describe them in the OpenAPI document)


class CustomerPage(BaseModel):
    items: list[Customer]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class Plan(BaseModel):
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


class PlanPage(BaseModel):
    items: list[Plan]
    next_cursor: str | None


class Cancellation(BaseModel):
    reason: str
    cancelled_at: datetime


class Contract(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    plan_id: uuid.UUID
    starts_on: date
    ends_on: date | None = Field(description="Last day (included); moved earlier by a cancellation")
    original_ends_on: date | None
    status: Literal["scheduled", "active", "ended", "cancelled"]
    cancellation: Cancellation | None
    version: int
    created_at: datetime
    updated_at: datetime


class ContractPage(BaseModel):
    items: list[Contract]
    next_cursor: str | None


class HistoryActor(BaseModel):
    type: Literal["operator", "customer", "system", "service"]
    id: str | None


class HistoryEntry(BaseModel):
    action: str = Field(description="created, updated, contract.started, became_member, suspended, ...")
    occurred_at: datetime
    actor: HistoryActor
    details: dict[str, Any]
    correlation_id: str | None


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next_cursor: str | None


class Suspension(BaseModel):
    id: uuid.UUID
    category: Literal["manual", "overdue", "policy", "other"]
    reason: str
    until: datetime | None
    created_at: datetime
    created_by: str | None


class Suspended(BaseModel):
    suspension_id: uuid.UUID
    customer: Customer


class UserAccountRequested(BaseModel):
    customer_id: uuid.UUID
    portal_access: Literal["requested"]


# Teams, credit, access

TeamRole = Literal["member", "admin"]
CreditKind = Literal["booking", "printing"]
Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), SINGLE_LINE]


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Unique among teams (case-insensitive), usually the organisation")
    description: FreeText = Field("", description="What the team is")
    paying_member_id: uuid.UUID | None = Field(
        None, description="A customer who pays for the team: joins it, and their credit is drawn on first"
    )
    max_size: StrictInt | None = Field(None, ge=1, le=10_000, description="Most members; none for no limit")
    share_booking_credit: StrictBool = Field(False, description="Members draw on each other's booking credit")
    share_printing_credit: StrictBool = Field(False, description="Members draw on each other's printing credit")
    share_access: StrictBool = Field(False, description="Members have space access while the team has an active member")


class TeamPatch(BaseModel):
    """Only the fields sent change; ``null`` clears paying_member_id and max_size."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: FreeText | None = None
    paying_member_id: uuid.UUID | None = Field(None, description="Must be a current member of the team")
    max_size: StrictInt | None = Field(None, ge=1, le=10_000)
    share_booking_credit: StrictBool | None = None
    share_printing_credit: StrictBool | None = None
    share_access: StrictBool | None = None


class Team(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    paying_member_id: uuid.UUID | None
    max_size: int | None
    share_booking_credit: bool
    share_printing_credit: bool
    share_access: bool
    member_count: int = Field(description="Current members")
    version: int
    created_at: datetime
    updated_at: datetime


class TeamPage(BaseModel):
    items: list[Team]
    next_cursor: str | None


class TeamListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: SingleLine | None = Field(None, max_length=200, description="Text in the team's name")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=500)


class TeamMemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: uuid.UUID = Field(description="The customer joining the team")
    role: TeamRole = Field("member", description="admin: manages the team's roster with their own token")


class TeamMemberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: TeamRole


class TeamMember(BaseModel):
    team_id: uuid.UUID
    customer_id: uuid.UUID
    full_name: str
    role: TeamRole
    joined_at: datetime
    left_at: datetime | None


class TeamMemberQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: Annotated[date, ISO_TEXT] | None = Field(
        None, description="Who was a member at any time on this day (the service's time zone); default: now"
    )


class TeamMemberPage(BaseModel):
    items: list[TeamMember]
    next_cursor: str | None


class CustomerTeam(BaseModel):
    team_id: uuid.UUID
    name: str
    role: TeamRole
    joined_at: datetime
    share_booking_credit: bool
    share_printing_credit: bool
    share_access: bool


class CustomerTeamPage(BaseModel):
    items: list[CustomerTeam]
    next_cursor: str | None


class CreditGrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CreditKind
    amount: StrictInt = Field(ge=1, le=10**6, description="Credit to add")
    reference: Reference | None = Field(None, description="Your reference (an invoice, a goodwill gesture)")
    note: FreeText | None = Field(None, description="Why, for operators")


class CreditConsumptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CreditKind
    amount: StrictInt = Field(ge=1, le=10**6, description="Credit to consume")
    reference: Reference = Field(description="What it pays for (a booking id, a print job)")


class CreditDrawView(BaseModel):
    customer_id: uuid.UUID = Field(description="Whose balance paid")
    team_id: uuid.UUID | None = Field(description="The sharing team, when it was not the consumer's own balance")
    amount: int


class CreditConsumption(BaseModel):
    consumption_id: uuid.UUID
    customer_id: uuid.UUID
    kind: CreditKind
    amount: int
    reference: str
    paid_by: list[CreditDrawView] = Field(description="The balances that paid, in order")
    own_balance_after: int


class CreditGrant(BaseModel):
    entry_id: int
    customer_id: uuid.UUID
    kind: CreditKind
    amount: int
    balance: int = Field(description="The customer's own balance of this kind after the grant")


class CreditBalance(BaseModel):
    own: int = Field(description="The customer's own balance")
    available: int = Field(description="What they can consume now: their own and their teams' shared credit")


class CreditBalances(BaseModel):
    customer_id: uuid.UUID
    booking: CreditBalance
    printing: CreditBalance


class CreditEntry(BaseModel):
    id: int
    kind: CreditKind
    amount: int = Field(description="Positive: a grant; negative: a draw of a consumption")
    reason: Literal["plan", "operator", "consumption"]
    reference: str | None
    consumption_id: uuid.UUID | None
    consumer_id: uuid.UUID | None = Field(description="Who consumed (a team mate when the team's pool paid)")
    team_id: uuid.UUID | None
    contract_id: uuid.UUID | None
    period_start: date | None
    created_at: datetime


class CreditEntryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CreditKind | None = None
    limit: int = Field(100, ge=1, le=500)
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None


class CreditEntryPage(BaseModel):
    items: list[CreditEntry]
    next_cursor: str | None


class Access(BaseModel):
    customer_id: uuid.UUID
    granted: bool
    rule: Literal["member", "team", "suspended", "erased", "no_membership"] = Field(
        description="The rule that granted or denied access"
    )
    team_id: uuid.UUID | None = Field(description="rule team: the team whose active member grants access")
    explanation: str
    sequence: int = Field(
        description="Sequence of the last customers.access.* event published for the customer (0: none yet)"
    )
