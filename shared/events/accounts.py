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


class AccountStateMixin(Message):
    """``accounts.account.*`` events after creation carry the account's status and role after the change; the
    envelope ``sequence`` is the account's version."""

    account_id: uuid.UUID = Field(description="The account's id")
    customer_id: uuid.UUID | None = Field(description="The customer the account belongs to")
    role: Literal["admin", "member", "contact"] = Field(description="Role after the change")
    status: Literal["invited", "active", "suspended", "revoked"] = Field(description="Status after the change")


@register
class AccountSuspendedV1(AccountStateMixin):
    """The customer was suspended, so is their account: login still works, with a suspended standing."""

    EVENT_TYPE = "accounts.account.suspended"
    EVENT_VERSION = 1


@register
class AccountReactivatedV1(AccountStateMixin):
    """The customer was reactivated, so is their account."""

    EVENT_TYPE = "accounts.account.reactivated"
    EVENT_VERSION = 1


@register
class AccountRoleChangedV1(AccountStateMixin):
    """The account's role followed the customer's kind (a contact became a member, or the reverse)."""

    EVENT_TYPE = "accounts.account.role_changed"
    EVENT_VERSION = 1

    previous_role: Literal["admin", "member", "contact"] = Field(description="Role before the change")


@register
class AccountRevokedV1(AccountStateMixin):
    """An operator revoked the account's portal access: it cannot log in, and every access token issued before
    ``revoked_at`` stops working in every service."""

    EVENT_TYPE = "accounts.account.revoked"
    EVENT_VERSION = 1

    revoked_at: datetime = Field(description="Tokens issued at or before this time are refused from now on")


@register
class AccountRestoredV1(AccountStateMixin):
    """An operator restored revoked portal access; tokens from before the revocation stay invalid."""

    EVENT_TYPE = "accounts.account.restored"
    EVENT_VERSION = 1

    revoked_at: datetime = Field(description="The revocation this ends (older tokens remain refused)")
