from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from shared.events.base import COMMANDS_EXCHANGE, Message, register


@register
class SendEmailV1(Message):
    """Command to the notifications service (commands exchange, notifications' own queue only): render a
    template and send it. Secrets such as the set-password link travel only inside ``sealed_context``,
    encrypted (AES-GCM) with a key that only the sender and notifications hold."""

    EVENT_TYPE = "notifications.send_email"
    EVENT_VERSION = 1
    EXCHANGE = COMMANDS_EXCHANGE

    request_key: str = Field(description="Idempotency key of the request, e.g. `welcome:<invitation id>`")
    template: str = Field(description="Template name, e.g. `welcome`")
    to_email: str = Field(description="Recipient address")
    to_name: str = Field(description="Recipient's name")
    customer_id: uuid.UUID | None = Field(None, description="Customer the email is about")
    account_id: uuid.UUID | None = Field(None, description="Account the email is about")
    context: dict[str, Any] = Field(default_factory=dict, description="Non-secret template variables")
    sealed_context: str | None = Field(
        None, description="Secret template variables, sealed (AES-GCM, base64url) for notifications"
    )


@register
class EmailSentV1(Message):
    """An email was accepted by the mail server (or written by the file backend)."""

    EVENT_TYPE = "notifications.email.sent"
    EVENT_VERSION = 1

    delivery_id: uuid.UUID = Field(description="The delivery record's id")
    template: str = Field(description="Template that was sent")
    customer_id: uuid.UUID | None = Field(None, description="Customer the email was about")
    account_id: uuid.UUID | None = Field(None, description="Account the email was about")
    attempts: int = Field(description="Attempts it took")


@register
class EmailFailedV1(Message):
    """An email could not be delivered: permanently rejected, or still failing after every retry."""

    EVENT_TYPE = "notifications.email.failed"
    EVENT_VERSION = 1

    delivery_id: uuid.UUID = Field(description="The delivery record's id")
    template: str = Field(description="Template that failed")
    customer_id: uuid.UUID | None = Field(None, description="Customer the email was about")
    account_id: uuid.UUID | None = Field(None, description="Account the email was about")
    attempts: int = Field(description="Attempts made")
    permanent: bool = Field(description="True when the server rejected the recipient permanently (5xx)")
    reason: str = Field(description="The server's answer or the error")
