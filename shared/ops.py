"""Operator commands for the plumbing: outbox backlog per service, dead letters (list, show, replay).

    python -m shared.ops outbox
    python -m shared.ops dead-letters [--show]
    python -m shared.ops replay QUEUE [--message-id ID ...]     # all of QUEUE's dead letters when no id is given

Replaying moves a dead letter back to its queue (attempt count reset) once the cause is fixed. It is safe to
repeat: a message whose effect already happened is absorbed by the consumer's inbox.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg

from shared.consumer import attempts_of
from shared.settings import CommonSettings
from shared.topology import QUEUES, Topology

SERVICES = ("customers", "accounts", "visitors", "notifications")


@dataclass
class DeadLetter:
    message_id: str | None
    routing_key: str
    reason: str
    dead_lettered_at: str
    attempts: int
    body: bytes


def _topology(common: CommonSettings) -> Topology:
    return Topology(common.amqp_prefix, tuple(common.retry_delays_ms))


async def dead_letter_counts(common: CommonSettings) -> dict[str, int | None]:
    """Messages in each queue's DLQ; None where the queue was never declared (no service has started yet)."""
    topology = _topology(common)
    connection = await aio_pika.connect(common.amqp_url)
    try:
        counts: dict[str, int | None] = {}
        for spec in QUEUES:
            channel = await connection.channel()  # a failed passive declare closes the channel
            try:
                q = await channel.declare_queue(topology.dlq(spec.name), passive=True)
                counts[spec.name] = int(q.declaration_result.message_count or 0)
                await channel.close()
            except aio_pika.exceptions.ChannelNotFoundEntity:
                counts[spec.name] = None
        return counts
    finally:
        await connection.close()


async def peek_dead_letters(common: CommonSettings, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Read dead letters without removing them (they are handed back to the DLQ when the connection closes)."""
    topology = _topology(common)
    connection = await aio_pika.connect(common.amqp_url)
    out: list[DeadLetter] = []
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=0)
        dlq = await channel.declare_queue(topology.dlq(queue), passive=True)
        while len(out) < limit and (message := await dlq.get(fail=False, no_ack=False)) is not None:
            headers = message.headers or {}
            out.append(
                DeadLetter(
                    message_id=message.message_id,
                    routing_key=str(headers.get("x-original-routing-key", message.routing_key or "")),
                    reason=str(headers.get("x-dead-letter-reason", "delivery limit reached (broker)")),
                    dead_lettered_at=str(headers.get("x-dead-lettered-at", "")),
                    attempts=attempts_of(message),
                    body=message.body,
                )
            )
    finally:
        await connection.close()  # unacked messages go back to the DLQ
    return out


async def replay(common: CommonSettings, queue: str, message_ids: set[str] | None = None) -> int:
    """Move dead letters of ``queue`` (all, or those with the given message ids) back to the queue. Each is
    published (confirmed) before it is removed from the DLQ, so a crash in between duplicates, never loses."""
    topology = _topology(common)
    connection = await aio_pika.connect(common.amqp_url)
    moved = 0
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = await channel.declare_queue(topology.dlq(queue), passive=True)
        count = int(dlq.declaration_result.message_count or 0)
        keep: list[aio_pika.abc.AbstractIncomingMessage] = []
        for _ in range(count):
            message = await dlq.get(fail=False, no_ack=False)
            if message is None:
                break
            if message_ids is not None and message.message_id not in message_ids:
                keep.append(message)  # held unacked until the end, so the loop does not see it again
                continue
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if not k.startswith("x-") or k in ("x-original-routing-key",)
            }
            headers["x-replayed-at"] = datetime.now(UTC).isoformat()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers=headers,
                ),
                routing_key=topology.queue(queue),
                mandatory=True,
            )
            await message.ack()
            moved += 1
        for message in keep:
            await message.nack(requeue=True)
    finally:
        await connection.close()
    return moved


def database_url(service: str) -> str:
    return os.environ.get(
        f"{service.upper()}_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/coworking_{service}"
    )


async def outbox_state(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for service, url in urls.items():
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            out[service] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        try:
            row = await conn.fetchrow(
                """SELECT count(*) AS backlog, max(attempts) AS max_attempts,
                          extract(epoch FROM now() - min(created_at)) AS oldest_s,
                          (array_agg(last_error ORDER BY id) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error
                   FROM outbox WHERE published_at IS NULL"""
            )
            out[service] = {
                "backlog": row["backlog"],
                "max_attempts": row["max_attempts"] or 0,
                "oldest_pending_s": round(float(row["oldest_s"]), 1) if row["oldest_s"] is not None else None,
                "last_error": row["last_error"],
            }
        finally:
            await conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.ops", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("outbox", help="unpublished outbox rows per service")
    dl = sub.add_parser("dead-letters", help="dead letters per queue")
    dl.add_argument("--show", action="store_true", help="also list each message with its reason")
    rp = sub.add_parser("replay", help="move dead letters back to their queue")
    rp.add_argument("queue", choices=[q.name for q in QUEUES])
    rp.add_argument("--message-id", action="append", help="only these (repeatable); default: all")
    args = parser.parse_args(argv)
    common = CommonSettings()

    if args.command == "outbox":
        state = asyncio.run(outbox_state({s: database_url(s) for s in SERVICES}))
        for service, info in state.items():
            print(f"{service:14} " + "  ".join(f"{k}={v}" for k, v in info.items()))
        return 1 if any("error" in i for i in state.values()) else 0
    if args.command == "dead-letters":
        counts = asyncio.run(dead_letter_counts(common))
        for queue, n in counts.items():
            print(f"{queue:32} " + (f"{n} dead letter(s)" if n is not None else "not declared yet"))
            if args.show and n:
                for d in asyncio.run(peek_dead_letters(common, queue)):
                    print(f"    {d.message_id}  {d.routing_key}  {d.dead_lettered_at}  {d.reason}")
        return 0
    moved = asyncio.run(replay(common, args.queue, set(args.message_id) if args.message_id else None))
    print(f"replayed {moved} message(s) to {args.queue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
