"""The whole RabbitMQ topology, declared (idempotently) at start-up so that nothing is ever published into the
void, whichever service starts first: by every service when its broker user may (local runs, full rights), else
once by ``python -m services setup-broker`` with an administrator, the services then only checking (passively,
which needs no permission) that all of it exists before they publish or consume.

Per consuming handler: a quorum queue ``<service>.<handler>`` bound to the routing keys it handles, retry queues
``<queue>.retry.<ms>ms`` (messages wait out their TTL there, then dead-letter back to the main queue), and a
dead-letter queue ``<queue>.dlq`` holding messages that cannot be handled, each with its reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel

from shared.events import (
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    AccountActivatedV1,
    AccountCreatedV1,
    AccountRestoredV1,
    AccountRevokedV1,
    CustomerBecameContactV1,
    CustomerBecameMemberV1,
    CustomerCreatedV1,
    CustomerErasedV1,
    CustomerReactivatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    CustomerUserAccountRequestedV1,
    SendEmailV1,
)

EVENT_LOG = "events.log"
"""A RabbitMQ stream bound to every event (``#``): the event log. Every event is routable even before anyone
subscribes to it (so ``mandatory`` publishing only fails on a real topology fault), and a new consumer can
replay recent history from it (offset ``first``). Retention is bounded by age."""
EVENT_LOG_MAX_AGE = "7D"

DELIVERY_LIMIT = 10
AT_LEAST_ONCE_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
"""Quorum queues dead-letter at most once by default (a message could vanish if the target is unavailable at that
instant); at-least-once keeps it until the target confirms."""
"""Backstop: a message redelivered this often (a consumer crashing on it) is dead-lettered by the broker."""


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: str
    bindings: tuple[str, ...]


CUSTOMER_FACTS = (
    CustomerCreatedV1.routing_key(),
    CustomerUpdatedV1.routing_key(),
    CustomerBecameMemberV1.routing_key(),
    CustomerBecameContactV1.routing_key(),
    CustomerSuspendedV1.routing_key(),
    CustomerReactivatedV1.routing_key(),
)

REVOCATIONS = (AccountRevokedV1.routing_key(), AccountRestoredV1.routing_key())

QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(
        "accounts.customer-events",
        EVENTS_EXCHANGE,
        (*CUSTOMER_FACTS, CustomerUserAccountRequestedV1.routing_key(), CustomerErasedV1.routing_key()),
    ),
    QueueSpec(
        "customers.account-events",
        EVENTS_EXCHANGE,
        (AccountCreatedV1.routing_key(), AccountActivatedV1.routing_key(), *REVOCATIONS),
    ),
    QueueSpec("notifications.account-events", EVENTS_EXCHANGE, REVOCATIONS),
    QueueSpec("notifications.customer-events", EVENTS_EXCHANGE, (CustomerErasedV1.routing_key(),)),
    QueueSpec("notifications.send-email", COMMANDS_EXCHANGE, (SendEmailV1.routing_key(),)),
    QueueSpec("visitors.account-events", EVENTS_EXCHANGE, REVOCATIONS),
    QueueSpec("visitors.customer-events", EVENTS_EXCHANGE, (*CUSTOMER_FACTS, CustomerErasedV1.routing_key())),
)


SERVICES = ("customers", "accounts", "visitors", "notifications")

PUBLISHES: dict[str, tuple[str, ...]] = {
    "customers": (EVENTS_EXCHANGE,),
    "accounts": (EVENTS_EXCHANGE, COMMANDS_EXCHANGE),  # notifications.send_email.v1: welcome, reset links
    "visitors": (EVENTS_EXCHANGE, COMMANDS_EXCHANGE),  # notifications.send_email.v1: visit invitations
    "notifications": (EVENTS_EXCHANGE,),
}
"""The exchanges each service's outbox publishes to. Its events' routing keys all start with ``<service>.``."""

DEFAULT_EXCHANGE = "amq.default"
"""The name RabbitMQ checks permissions against for the default exchange (``""``), which the consumers use to move
a message to their own retry and dead-letter queues."""


@dataclass(frozen=True)
class Permissions:
    """A broker user's permissions in the vhost (three regular expressions), and per topic exchange the routing
    keys it may publish (``write``) and bind (``read``) with: what RabbitMQ's ``set_permissions`` and
    ``set_topic_permissions`` take."""

    configure: str
    write: str
    read: str
    topic: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    prefix: str = ""
    retry_delays_ms: tuple[int, ...] = (1000, 5000, 30000, 120000, 600000)

    def exchange(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def queue(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def dlq(self, name: str) -> str:
        return f"{self.queue(name)}.dlq"

    def retry_queue(self, name: str, delay_ms: int) -> str:
        return f"{self.queue(name)}.retry.{delay_ms}ms"

    def all_queue_names(self) -> list[str]:
        names: list[str] = [self.queue(EVENT_LOG)]
        for spec in QUEUES:
            names += [self.queue(spec.name), self.dlq(spec.name)]
            names += [self.retry_queue(spec.name, d) for d in sorted(set(self.retry_delays_ms))]
        return names

    def permissions(self, service: str) -> Permissions:
        """The least a service's own broker user needs once ``setup-broker`` has declared the topology:

        - configure: nothing (declaring, binding, deleting are the setup's; a passive declare needs no permission);
        - write: the exchanges its outbox publishes to, and the default exchange (retry and dead-letter copies go
          to its own queues by name: RabbitMQ cannot narrow the default exchange to some queues);
        - read: its own queues (``<prefix><service>.*``: main, ``.dlq``, ``.retry.<ms>ms``), to consume and replay;
        - topic: on ``events``, only routing keys of its own events (``<service>.``), no binding.
        """
        if service not in PUBLISHES:
            raise ValueError(f"unknown service {service!r}")
        exchanges = [re.escape(self.exchange(name)) for name in PUBLISHES[service]]
        return Permissions(
            configure="^$",
            write=f"^({'|'.join([*exchanges, re.escape(DEFAULT_EXCHANGE)])})$",
            read=f"^{re.escape(self.queue(service))}\\.",
            topic={self.exchange(EVENTS_EXCHANGE): (f"^{re.escape(service)}\\.", "^$")},
        )

    async def verify(self, channel: AbstractChannel) -> None:
        """Check, passively (no permission needed), that the whole topology exists: both exchanges, the event log,
        every queue with its retry and dead-letter queues. Raises ``ChannelNotFoundEntity`` naming what is missing
        (the channel is then closed)."""
        for name in (EVENTS_EXCHANGE, COMMANDS_EXCHANGE):
            await channel.declare_exchange(self.exchange(name), passive=True)
        for queue in self.all_queue_names():
            await channel.declare_queue(queue, passive=True)

    async def declare(self, channel: AbstractChannel) -> None:
        exchanges = {
            EVENTS_EXCHANGE: await channel.declare_exchange(
                self.exchange(EVENTS_EXCHANGE), aio_pika.ExchangeType.TOPIC, durable=True
            ),
            COMMANDS_EXCHANGE: await channel.declare_exchange(
                self.exchange(COMMANDS_EXCHANGE), aio_pika.ExchangeType.DIRECT, durable=True
            ),
        }
        log = await channel.declare_queue(
            self.queue(EVENT_LOG),
            durable=True,
            arguments={"x-queue-type": "stream", "x-max-age": EVENT_LOG_MAX_AGE},
        )
        await log.bind(exchanges[EVENTS_EXCHANGE], routing_key="#")
        for spec in QUEUES:
            main = self.queue(spec.name)
            await channel.declare_queue(self.dlq(spec.name), durable=True, arguments={"x-queue-type": "quorum"})
            queue = await channel.declare_queue(
                main,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-delivery-limit": DELIVERY_LIMIT,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.dlq(spec.name),
                    **AT_LEAST_ONCE_DEAD_LETTERING,
                },
            )
            for key in spec.bindings:
                await queue.bind(exchanges[spec.exchange], routing_key=key)
            for delay in sorted(set(self.retry_delays_ms)):
                await channel.declare_queue(
                    self.retry_queue(spec.name, delay),
                    durable=True,
                    arguments={
                        "x-queue-type": "quorum",
                        "x-message-ttl": delay,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": main,
                        **AT_LEAST_ONCE_DEAD_LETTERING,
                    },
                )

    async def delete(self, channel: AbstractChannel) -> None:
        """Remove everything this topology declared (used by tests with their own prefix)."""
        for name in self.all_queue_names():
            await channel.queue_delete(name, if_unused=False, if_empty=False)
        for ex in (EVENTS_EXCHANGE, COMMANDS_EXCHANGE):
            await channel.exchange_delete(self.exchange(ex))
