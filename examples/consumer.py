"""An example consumer of the coworking backend's events: your own queue, at-least-once delivery handled.

    python examples/consumer.py --amqp-url amqp://guest:guest@127.0.0.1:5672/ \
        --queue my-app.customer-events --bind 'customers.customer.*.v1'
    python examples/consumer.py --queue door-system.access --bind 'customers.access.*.v1'   # a door system

What it shows (README, "Events"):

- It declares its **own durable quorum queue** (``<prefix><queue>``) bound to the topic exchange
  ``<prefix>events`` with the routing keys you give (``--bind``, repeatable), so nothing is lost while it is down.
- Delivery is at least once, so it **deduplicates on ``event_id``**.
- Per subject it keeps the **latest ``sequence``** and ignores an event that is not newer (a stale or reordered
  delivery): ``customers.customer.*`` events carry the customer's kind and standing after the change, so applying
  only newer ones converges whatever the delivery order. The same holds for ``customers.access.*`` (``subject``:
  the customer, ``sequence``: their access version; granted or revoked is the whole state), which is what a door
  system needs. A subject's sequence counts within its stream (the event type without its last part): the
  customer id is the subject of ``customers.customer.*``, ``customers.access.*`` and ``customers.credit.*``, each
  with its own counter, so the latest sequence is kept per (stream, subject).
- It **acks after handling**. A message that is not an envelope is rejected (dropped: give the queue a
  dead-letter exchange in a real deployment); when your handler raises, the message goes back to the queue and is
  tried again, up to the quorum queue's delivery limit.
- **SIGINT / SIGTERM** stop it cleanly: no new messages, the one in hand is finished and acked, then it closes.

The example keeps the seen event ids and the sequences **in memory**, so they are forgotten on restart (a
redelivered event is then handled again). A real consumer keeps them in its own database and writes them in the
same transaction as the effects of the event.

It prints one line per event it applies (stdout) and one per event it skips or refuses (stderr). It needs
aio-pika, and pydantic for the envelope model of ``coworking_client``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import AMQPConnectionError
from coworking_client.events import Envelope
from pydantic import ValidationError

EXCHANGE = "events"
QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-delivery-limit": 10}

Outcome = Literal["applied", "duplicate", "stale", "invalid"]
Handler = Callable[[Envelope], Awaitable[None] | None]


@dataclass
class ConsumerState:
    """What the consumer remembers (in memory only: see the module docstring)."""

    seen: set[uuid.UUID] = field(default_factory=set)
    latest: dict[tuple[str, str], int] = field(default_factory=dict)  # (stream, subject) -> newest sequence applied
    counts: dict[Outcome, int] = field(default_factory=lambda: {"applied": 0, "duplicate": 0, "stale": 0, "invalid": 0})


def stream(envelope: Envelope) -> str:
    """The sequence's counter: ``customers.access`` for ``customers.access.granted`` (sequences of one subject are
    comparable only within one stream)."""
    return envelope.event_type.rpartition(".")[0]


def print_event(envelope: Envelope) -> None:
    """The default handler: one line per event (ids, kind, standing and access rule; no names or emails)."""
    payload = envelope.payload
    details = [f"{key}={payload[key]}" for key in ("kind", "standing", "rule", "team_id") if payload.get(key)]
    if isinstance(payload.get("changes"), dict):
        details.append("changed=" + ",".join(sorted(payload["changes"])))
    print(
        f"{envelope.occurred_at.isoformat()} {envelope.routing_key} subject={envelope.subject} "
        f"sequence={envelope.sequence} {' '.join(details)}".rstrip(),
        flush=True,
    )


async def process(state: ConsumerState, body: bytes, handle: Handler = print_event) -> Outcome:
    """Handle one message body: parse the envelope, skip duplicates and stale events, otherwise call ``handle``
    and remember the event. When ``handle`` raises, nothing is remembered (the message will come again)."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError:
        outcome: Outcome = "invalid"
    else:
        if envelope.event_id in state.seen:
            outcome = "duplicate"
        elif envelope.sequence <= state.latest.get((stream(envelope), envelope.subject), -1):
            outcome = "stale"
            state.seen.add(envelope.event_id)
        else:
            result = handle(envelope)
            if inspect.isawaitable(result):
                await result
            state.seen.add(envelope.event_id)
            state.latest[(stream(envelope), envelope.subject)] = envelope.sequence
            outcome = "applied"
    state.counts[outcome] += 1
    return outcome


class Consumer:
    """Consumes ``<prefix><queue>`` one message at a time (in delivery order) until ``stop()``."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        queue: str,
        bindings: Sequence[str],
        prefix: str = "",
        handle: Handler = print_event,
        state: ConsumerState | None = None,
        prefetch: int = 20,
    ) -> None:
        self.connection = connection
        self.queue_name = f"{prefix}{queue}"
        self.exchange_name = f"{prefix}{EXCHANGE}"
        self.bindings = tuple(bindings)
        self.handle = handle
        self.state = state or ConsumerState()
        self.prefetch = prefetch
        self._lock = asyncio.Lock()  # aio-pika runs each delivery in its own task: one at a time, in order
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._channel = channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        # the services declare the same exchange at start-up; declaring it here too lets either start first
        exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        self._queue = await channel.declare_queue(self.queue_name, durable=True, arguments=QUEUE_ARGUMENTS)
        for routing_key in self.bindings:
            await self._queue.bind(exchange, routing_key=routing_key)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self) -> None:
        """Take no new messages, let the one in hand finish, close the channel (unacked ones are redelivered)."""
        if self._queue is not None and self._tag is not None:
            await self._queue.cancel(self._tag)
            self._tag = None
        async with self._lock:
            if self._channel is not None:
                await self._channel.close()
                self._channel = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                return  # stopping: not acked, so the broker delivers it again later
            try:
                outcome = await process(self.state, message.body, self.handle)
            except Exception as exc:
                print(f"handler failed on {message.message_id}, will retry: {exc!r}", file=sys.stderr, flush=True)
                await message.nack(requeue=True)
                return
            if outcome == "invalid":
                print(f"refused {message.message_id}: not an event envelope", file=sys.stderr, flush=True)
                await message.reject(requeue=False)
                return
            if outcome != "applied":
                print(f"skipped {message.message_id}: {outcome}", file=sys.stderr, flush=True)
            await message.ack()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the coworking backend's events, once each, in order.")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/", help="RabbitMQ URL")
    parser.add_argument("--prefix", default="", help="the system's AMQP_PREFIX (empty unless it sets one)")
    parser.add_argument("--queue", default="my-app.customer-events", help="your own queue (name it after your app)")
    parser.add_argument(
        "--bind",
        action="append",
        dest="bindings",
        metavar="ROUTING_KEY",
        help="routing key pattern to receive, repeatable (default: customers.customer.*.v1)",
    )
    args = parser.parse_args(argv)
    args.bindings = args.bindings or ["customers.customer.*.v1"]
    return args


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    """Consume until ``stop`` is set, or until SIGINT/SIGTERM when no event is given."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect_robust(args.amqp_url)
    try:
        consumer = Consumer(connection, queue=args.queue, bindings=args.bindings, prefix=args.prefix)
        await consumer.start()
        print(
            f"consuming {consumer.queue_name} ({', '.join(args.bindings)} on {consumer.exchange_name}); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await consumer.stop()
        counts = ", ".join(f"{n} {outcome}" for outcome, n in consumer.state.counts.items())
        print(f"stopped: {counts}", file=sys.stderr, flush=True)
    finally:
        await connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except (AMQPConnectionError, OSError) as exc:  # the URL is not printed: it may hold a password
        print(f"cannot reach RabbitMQ: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
