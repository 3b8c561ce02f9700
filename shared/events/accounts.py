from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.events.base import Message, register


@register
class AccountCreatedV1(Message):
    """A user account was created for a customer and an invitation (set-password link) issued.
    The invitation token itself never travels in this event."""

    EVENT_TYPE = "accounts.account.created"
    EVENT_VERSION = 1

    account_id: uuid.UUID = Field(description="The account's id")
    customer_id: uuid.UUID = Field(description="The customer the account belongs to")
    role: Literal["member", "contact"] = Field(description="Portal role, following the customer's kind")
    status: Literal["invited"] = Field(description="Portal access: invited until the password is set")
    invitation_expires_at: datetime = Field(description="When the set-password link stops working")


@register
class AccountActivatedV1(Message):
    """The person set their password through the invitation link; the account can log in."""

    EVENT_TYPE = "accounts.account.activated"
    EVENT_VERSION = 1

    account_id: uuid.UUID = Field(description="The account's id")
    customer_id: uuid.UUID | None = Field(description="The customer the account belongs to")
    status: Literal["active"] = Field(description="Portal access after activation")
