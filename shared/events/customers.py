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
