from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field

from shared.events.base import Message, register


@register
class CustomerCreatedV1(Message):
    """A customer (member or contact) was created by an operator."""

    EVENT_TYPE = "customers.customer.created"
    EVENT_VERSION = 1

    customer_id: uuid.UUID = Field(description="The customer's id")
    full_name: str = Field(description="Full name as entered by the operator")
    email: str = Field(description="Email address (unique among customers, case-insensitive)")
    company_name: str | None = Field(None, description="Company the customer belongs to")
    phone: str | None = Field(None, description="Phone number")
    kind: Literal["member", "contact"] = Field(description="Derived from contracts; new customers are contacts")
    standing: Literal["active", "suspended"] = Field(description="Whether the customer is suspended")
    send_welcome: bool = Field(description="The operator asked to create a user account and send the welcome message")


Kind = Literal["member", "contact"]
Standing = Literal["active", "suspended"]
SuspensionCategory = Literal["manual", "overdue", "policy", "other"]
Actor = Literal["operator", "customer", "system"]


class CustomerStateMixin(Message):
    """Every ``customers.customer.*`` event after creation carries the customer's kind and standing *after* the
    change, and its envelope ``sequence`` is the customer's version: a replica applies an event only when its
    sequence is newer than what it holds, and so converges whatever the delivery order."""

    customer_id: uuid.UUID = Field(description="The customer's id")
    kind: Kind = Field(description="Kind after the change (derived from contracts)")
    standing: Standing = Field(description="Standing after the change")


class FieldChange(Message):
    old: Any = Field(description="Value before the change")
    new: Any = Field(description="Value after the change")


@register
class CustomerUpdatedV1(CustomerStateMixin):
    """An operator (or the customer) changed profile fields."""

    EVENT_TYPE = "customers.customer.updated"
    EVENT_VERSION = 1

    changes: dict[str, FieldChange] = Field(description="Changed fields with their old and new values")
    full_name: str = Field(description="Full name after the change")
    email: str = Field(description="Email after the change (the login email follows it)")


@register
class CustomerBecameMemberV1(CustomerStateMixin):
    """A contract started, so the customer (a contact until now) is a member."""

    EVENT_TYPE = "customers.customer.became_member"
    EVENT_VERSION = 1

    contract_id: uuid.UUID = Field(description="The contract whose start made the customer a member")


@register
class CustomerBecameContactV1(CustomerStateMixin):
    """The customer's last active contract ended, so the member is a contact."""

    EVENT_TYPE = "customers.customer.became_contact"
    EVENT_VERSION = 1

    contract_id: uuid.UUID = Field(description="The contract whose end made the customer a contact")


@register
class CustomerSuspendedV1(CustomerStateMixin):
    """The customer was suspended: they may log in and read, and change nothing (see the README's policy)."""

    EVENT_TYPE = "customers.customer.suspended"
    EVENT_VERSION = 1

    suspension_id: uuid.UUID = Field(description="The suspension's id")
    category: SuspensionCategory = Field(description="Why, as a category")
    reason: str = Field(description="Why, in the operator's words")
    until: datetime | None = Field(None, description="When the suspension ends by itself, if set")


@register
class CustomerReactivatedV1(CustomerStateMixin):
    """The suspension ended (an operator lifted it, or its end date came)."""

    EVENT_TYPE = "customers.customer.reactivated"
    EVENT_VERSION = 1

    suspension_id: uuid.UUID = Field(description="The suspension that ended")
    by: Actor = Field(description="operator (lifted by hand) or system (its end date came)")


@register
class CustomerUserAccountRequestedV1(CustomerStateMixin):
    """An operator asked for a user account for an existing customer (the welcome message follows)."""

    EVENT_TYPE = "customers.customer.user_account_requested"
    EVENT_VERSION = 1

    full_name: str = Field(description="Full name, for the welcome message")
    email: str = Field(description="Email address: the login and where the welcome message goes")


@register
class ContractStartedV1(Message):
    """A contract's start date came (or it was created already started)."""

    EVENT_TYPE = "customers.contract.started"
    EVENT_VERSION = 1

    contract_id: uuid.UUID = Field(description="The contract's id")
    customer_id: uuid.UUID = Field(description="The customer under contract")
    plan_id: uuid.UUID = Field(description="The plan")
    starts_on: date = Field(description="First day of the contract")
    ends_on: date | None = Field(None, description="Last day of the contract, if fixed")


@register
class ContractEndedV1(Message):
    """A contract ended: its last day passed (expired) or it was cancelled."""

    EVENT_TYPE = "customers.contract.ended"
    EVENT_VERSION = 1

    contract_id: uuid.UUID = Field(description="The contract's id")
    customer_id: uuid.UUID = Field(description="The customer under contract")
    plan_id: uuid.UUID = Field(description="The plan")
    ended_on: date = Field(description="The contract's last day")
    reason: Literal["expired", "cancelled"] = Field(description="Its end date passed, or it was cancelled")


@register
class CustomerErasedV1(Message):
    """The customer was erased (right to erasure): every service removes or anonymises what it holds about them
    and keeps only non-personal records. Final: no later event about this customer is applied."""

    EVENT_TYPE = "customers.customer.erased"
    EVENT_VERSION = 1

    customer_id: uuid.UUID = Field(description="The erased customer's id (the only identifier left)")
    erased_at: datetime = Field(description="When the erasure was decided")


TeamRole = Literal["member", "admin"]
CreditKind = Literal["booking", "printing"]


class TeamSettings(Message):
    name: str = Field(description="The team's name (unique among teams)")
    description: str = Field(description="What the team is (usually an organisation)")
    paying_member_id: uuid.UUID | None = Field(None, description="The member whose credit the team draws on first")
    max_size: int | None = Field(None, description="Most members the team may have; none for no limit")
    share_booking_credit: bool = Field(description="Members draw on each other's booking credit")
    share_printing_credit: bool = Field(description="Members draw on each other's printing credit")
    share_access: bool = Field(description="Members have space access while the team has an active member")


@register
class TeamCreatedV1(TeamSettings):
    """An operator created a team. The envelope's ``subject`` is the team and ``sequence`` its version (every
    ``customers.team.*`` event), so a consumer applies only newer ones."""

    EVENT_TYPE = "customers.team.created"
    EVENT_VERSION = 1

    team_id: uuid.UUID = Field(description="The team's id")


@register
class TeamUpdatedV1(TeamSettings):
    """An operator changed a team's settings; carries the settings after the change and what changed."""

    EVENT_TYPE = "customers.team.updated"
    EVENT_VERSION = 1

    team_id: uuid.UUID = Field(description="The team's id")
    changes: dict[str, FieldChange] = Field(description="Changed settings with their old and new values")


@register
class TeamDeletedV1(Message):
    """An operator deleted a team: every membership ended with it (no member_removed event for each)."""

    EVENT_TYPE = "customers.team.deleted"
    EVENT_VERSION = 1

    team_id: uuid.UUID = Field(description="The team's id")
    former_member_ids: list[uuid.UUID] = Field(description="Who was in the team when it was deleted")


@register
class TeamMemberAddedV1(Message):
    """A customer joined a team (added by an operator or a team administrator)."""

    EVENT_TYPE = "customers.team.member_added"
    EVENT_VERSION = 1

    team_id: uuid.UUID = Field(description="The team's id")
    customer_id: uuid.UUID = Field(description="The customer who joined")
    role: TeamRole = Field(description="member, or admin (manages the team's roster)")
    joined_at: datetime = Field(description="When the membership began")


@register
class TeamMemberUpdatedV1(Message):
    """A member's role in the team changed."""

    EVENT_TYPE = "customers.team.member_updated"
    EVENT_VERSION = 1

    team_id: uuid.UUID = Field(description="The team's id")
    customer_id: uuid.UUID = Field(description="The member")
    role: TeamRole = Field(description="The role after the change")


@register
class TeamMemberRemovedV1(Message):
    """A customer left a team (removed by an operator or a team administrator, or erased)."""

    EVENT_TYPE = "customers.team.member_removed"
    EVENT_VERSION = 1

    team_id: uuid.UUID = Field(description="The team's id")
    customer_id: uuid.UUID = Field(description="The customer who left")
    left_at: datetime = Field(description="When the membership ended")


@register
class CreditGrantedV1(Message):
    """Credit was added to a customer's ledger: their plan's allowance for a billing period, or an operator's
    grant. ``subject`` is the customer; ``sequence`` the ledger entry id (increasing)."""

    EVENT_TYPE = "customers.credit.granted"
    EVENT_VERSION = 1

    entry_id: int = Field(description="The ledger entry")
    customer_id: uuid.UUID = Field(description="Whose ledger")
    kind: CreditKind = Field(description="booking or printing credit")
    amount: int = Field(description="Credit added (positive)")
    reason: Literal["plan", "operator"] = Field(description="plan: a period's allowance; operator: granted by hand")
    reference: str | None = Field(None, description="The grant's reference (for plan grants: the contract period)")
    contract_id: uuid.UUID | None = Field(None, description="Plan grants: the contract")
    period_start: date | None = Field(None, description="Plan grants: the first day of the billing period")
    balance_after: int = Field(description="The customer's own balance of this kind after the grant")


class CreditDraw(Message):
    customer_id: uuid.UUID = Field(description="Whose balance paid")
    team_id: uuid.UUID | None = Field(None, description="The sharing team that let the consumer draw on it")
    amount: int = Field(description="How much this balance paid")


@register
class CreditConsumedV1(Message):
    """A customer consumed credit; ``paid_by`` says which balances paid (their own first, then shared team
    credit). ``subject`` is the consuming customer."""

    EVENT_TYPE = "customers.credit.consumed"
    EVENT_VERSION = 1

    consumption_id: uuid.UUID = Field(description="The consumption")
    customer_id: uuid.UUID = Field(description="Who consumed")
    kind: CreditKind = Field(description="booking or printing credit")
    amount: int = Field(description="Credit consumed (positive)")
    reference: str = Field(description="The caller's reference (a booking, a print job)")
    paid_by: list[CreditDraw] = Field(description="The balances drawn on, in order")


AccessRule = Literal["member", "team", "suspended", "erased", "no_membership"]


@register
class AccessGrantedV1(Message):
    """The customer's effective space access began (door systems: let them in). ``subject`` is the customer and
    ``sequence`` increases with each access change of that customer."""

    EVENT_TYPE = "customers.access.granted"
    EVENT_VERSION = 1

    customer_id: uuid.UUID = Field(description="Who has access now")
    rule: Literal["member", "team"] = Field(description="member: an active contract; team: a team sharing access")
    team_id: uuid.UUID | None = Field(None, description="rule team: the team whose active member grants it")


@register
class AccessRevokedV1(Message):
    """The customer's effective space access ended (door systems: stop letting them in)."""

    EVENT_TYPE = "customers.access.revoked"
    EVENT_VERSION = 1

    customer_id: uuid.UUID = Field(description="Who lost access")
    rule: Literal["suspended", "erased", "no_membership"] = Field(
        description="Why: suspended; erased; no_membership (no active contract and no team sharing access with an "
        "active member)"
    )
