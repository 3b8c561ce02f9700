from __future__ import annotations

import uuid
from typing import Literal

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
