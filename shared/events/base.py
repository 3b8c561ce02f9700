from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

EVENTS_EXCHANGE = "events"
"""Durable topic exchange of domain events (broadcast: anyone may bind)."""
COMMANDS_EXCHANGE = "commands"
"""Durable direct exchange of commands addressed to one service's queue (point to point)."""


class Envelope(BaseModel):
    """Every message on the bus is this JSON object; ``payload`` is the event's own model."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: uuid.UUID = Field(description="Unique id; also the AMQP message_id and the consumers' inbox key")
    event_type: str = Field(description="`<producer>.<entity>.<past-tense verb>`, e.g. customers.customer.created")
    event_version: int = Field(ge=1, description="Major version of the payload schema")
    occurred_at: datetime = Field(description="When the change happened (UTC)")
    producer: str = Field(description="Service that produced the message")
    correlation_id: str | None = Field(None, description="Id of the request or flow this belongs to")
    causation_id: str | None = Field(None, description="event_id (or request id) that caused this message")
    subject: str = Field(description="Id of the aggregate the event is about")
    sequence: int = Field(ge=0, description="Per-aggregate version after the change; increases with each change")
    payload: dict[str, Any] = Field(description="The event's own fields")

    @property
    def routing_key(self) -> str:
        return f"{self.event_type}.v{self.event_version}"


class Message(BaseModel):
    """Base of event and command payloads. Parsed tolerantly: unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    EVENT_TYPE: ClassVar[str]
    EVENT_VERSION: ClassVar[int]
    EXCHANGE: ClassVar[str] = EVENTS_EXCHANGE

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.EVENT_TYPE}.v{cls.EVENT_VERSION}"

    @classmethod
    def producer(cls) -> str:
        return cls.EVENT_TYPE.split(".", 1)[0]


REGISTRY: dict[str, type[Message]] = {}


M = TypeVar("M", bound=type[Message])


def register(cls: M) -> M:
    key = cls.routing_key()
    if key in REGISTRY:
        raise ValueError(f"two models for {key}")
    REGISTRY[key] = cls
    return cls


class UnknownMessage(LookupError):
    pass


def lookup(event_type: str, version: int) -> type[Message]:
    try:
        return REGISTRY[f"{event_type}.v{version}"]
    except KeyError:
        raise UnknownMessage(f"unknown event type or version: {event_type}.v{version}") from None


def make_envelope(
    message: Message,
    *,
    subject: str | uuid.UUID,
    sequence: int,
    producer: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        event_type=message.EVENT_TYPE,
        event_version=message.EVENT_VERSION,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
        subject=str(subject),
        sequence=sequence,
        payload=message.model_dump(mode="json"),
    )
