"""The envelope every message on the bus is wrapped in (see docs/asyncapi.json for each payload)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: uuid.UUID
    """Unique per event (also the AMQP message_id): delivery is at least once, deduplicate on it."""
    event_type: str
    event_version: int
    occurred_at: datetime
    producer: str
    correlation_id: str | None = None
    causation_id: str | None = None
    subject: str
    """The aggregate the event is about (a customer id for customers.customer.*)."""
    sequence: int
    """The subject's version after the change: apply an event only if it is newer than the one you hold."""
    payload: dict[str, Any]

    @property
    def routing_key(self) -> str:
        return f"{self.event_type}.v{self.event_version}"
