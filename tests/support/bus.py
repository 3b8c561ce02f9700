"""Watching the bus from a test: an exclusive queue bound to every event of the test's prefix."""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from shared.topology import Topology


class EventRecorder:
    def __init__(self, connection: AbstractRobustConnection, prefix: str) -> None:
        self.connection = connection
        self.topology = Topology(prefix)
        self.events: list[dict[str, Any]] = []
        self.messages: list[AbstractIncomingMessage] = []

    async def start(self) -> EventRecorder:
        channel = await self.connection.channel()
        await self.topology.declare(channel)
        exchange = await channel.get_exchange(self.topology.exchange("events"))
        queue = await channel.declare_queue(f"{self.topology.prefix}recorder.{uuid.uuid4().hex[:6]}", exclusive=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self.events.append(orjson.loads(message.body))

    def of_type(self, routing_key: str) -> list[dict[str, Any]]:
        return [e for e in self.events if f"{e['event_type']}.v{e['event_version']}" == routing_key]


async def queue_depth(connection: AbstractRobustConnection, name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def drain(connection: AbstractRobustConnection, name: str) -> list[AbstractIncomingMessage]:
    """Take (and ack) every message waiting in a queue."""
    channel = await connection.channel()
    out = []
    try:
        queue = await channel.declare_queue(name, passive=True)
        while (message := await queue.get(fail=False, timeout=2)) is not None:
            await message.ack()
            out.append(message)
    finally:
        await channel.close()
    return out


async def publish_raw(
    connection: AbstractRobustConnection,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str | None = None,
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    try:
        ex = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        await ex.publish(
            aio_pika.Message(body, message_id=message_id or str(uuid.uuid4()), delivery_mode=2),
            routing_key=routing_key,
            mandatory=True,
        )
    finally:
        await channel.close()
